-- POST /api/payments/webhooks/paystack/: charge.success events for pending payments the bench
-- prepared, each body signed with PAYSTACK_SECRET_KEY (x-paystack-signature). Each thread
-- sends its own share of the bodies, each once: a repeat would be a duplicate the inbox
-- drops, not work, so running out is counted (`repeats`) and fails the run.
-- Arguments: the bodies file (signature, a space, the JSON body per line), the number of threads.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

function init(args)
   events = {}
   for _, line in ipairs(my_share(read_lines(args[1]), tonumber(args[2]))) do
      local space = string.find(line, " ", 1, true)
      table.insert(events, { signature = string.sub(line, 1, space - 1), body = string.sub(line, space + 1) })
   end
   sent = 0
   repeats = 0
end

function request()
   sent = sent + 1
   if sent > #events then
      repeats = repeats + 1
   end
   local event = events[(sent - 1) % #events + 1]
   return wrk.format("POST", "/api/payments/webhooks/paystack/", {
      ["Content-Type"] = "application/json",
      ["x-paystack-signature"] = event.signature,
   }, event.body)
end
