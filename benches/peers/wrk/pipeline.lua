-- wrk script for HTTP pipelining: each write carries DEPTH requests (wrk -s pipeline.lua
-- URL -- DEPTH); wrk counts the responses one by one.
local batch

function init(args)
    local depth = tonumber(args[1]) or 1
    local requests = {}
    for i = 1, depth do
        requests[i] = wrk.format()
    end
    batch = table.concat(requests)
end

function request()
    return batch
end
