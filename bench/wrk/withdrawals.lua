-- POST /api/payments/withdrawals/: each request a host of this thread's share withdrawing
-- `amount` from its funded wallet to its bank account, with an Idempotency-Key never used
-- before (the run's tag, the thread and its counter): every request is a new withdrawal.
-- Arguments: the hosts file (token wallet bank_account per line), the number of threads,
-- the run's tag, the amount.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

function init(args)
   hosts = {}
   for _, line in ipairs(my_share(read_lines(args[1]), tonumber(args[2]))) do
      local f = fields(line)
      table.insert(hosts, { token = "Bearer " .. f[1], wallet = f[2], bank = f[3] })
   end
   tag = args[3]
   amount = args[4]
   sent = 0
end

function request()
   sent = sent + 1
   local host = hosts[(sent - 1) % #hosts + 1]
   local body = string.format('{"wallet":%s,"bank_account":%s,"amount":"%s"}', host.wallet, host.bank, amount)
   return wrk.format("POST", "/api/payments/withdrawals/", {
      ["Authorization"] = host.token,
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = tag .. "-" .. id .. "-" .. sent,
   }, body)
end
