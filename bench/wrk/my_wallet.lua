-- GET /api/payments/wallets/my_wallet/ with a host's Bearer token, each request the next
-- host of this thread's share.
-- Arguments: the hosts file (token wallet bank_account per line), the number of threads.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

function init(args)
   tokens = {}
   for _, line in ipairs(my_share(read_lines(args[1]), tonumber(args[2]))) do
      table.insert(tokens, "Bearer " .. fields(line)[1])
   end
   sent = 0
end

function request()
   sent = sent + 1
   local token = tokens[(sent - 1) % #tokens + 1]
   return wrk.format("GET", "/api/payments/wallets/my_wallet/", { ["Authorization"] = token })
end
