-- What every scenario of bench/stack.py shares: each thread's id, counting the answers that
-- are not 2xx, and one summary line for the bench to read. A scenario script loads this file
-- first (dofile), then defines init(args) and request() if it needs them.
--
-- wrk runs one Lua state per thread plus a main one: setup() and done() run in the main
-- state, init(), request() and response() in each thread's. The main state keeps the threads
-- so done() can add up what each one counted.

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

non2xx = 0
sample = nil

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if sample == nil then
         sample = status .. " " .. string.sub(string.gsub(body or "", "%s+", " "), 1, 200)
      end
   end
end

-- The lines of a file the bench wrote (one record a line).
function read_lines(path)
   local lines = {}
   local file = assert(io.open(path, "r"))
   for line in file:lines() do
      if line ~= "" then
         table.insert(lines, line)
      end
   end
   file:close()
   return lines
end

-- This thread's share of `records`: every nthreads-th one, starting at its id, so no two
-- threads ever send the same record.
function my_share(records, nthreads)
   local share = {}
   for i = id + 1, #records, nthreads do
      table.insert(share, records[i])
   end
   assert(#share > 0, "no records for thread " .. id)
   return share
end

-- Space-separated fields of one line.
function fields(line)
   local out = {}
   for field in string.gmatch(line, "%S+") do
      table.insert(out, field)
   end
   return out
end

function done(summary, latency, requests)
   local bad, repeats, samples = 0, 0, {}
   for _, thread in ipairs(threads) do
      bad = bad + (thread:get("non2xx") or 0)
      repeats = repeats + (thread:get("repeats") or 0)
      local s = thread:get("sample")
      if s then
         table.insert(samples, s)
      end
   end
   local errors = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d non2xx=%d repeats=%d connect=%d read=%d write=%d timeout=%d "
         .. "p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.duration, bad, repeats, errors.connect, errors.read, errors.write,
      errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max
   ))
   for _, s in ipairs(samples) do
      io.write("BENCH-SAMPLE " .. s .. "\n")
   end
end
