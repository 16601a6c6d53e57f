-- `http-request lua.mirror URL`: a copy of the request goes to URL (the challenger's Service) from a
-- task of its own, after the client's request went on: the copy's answer is dropped and its failure
-- (refused, timed out, 5xx) is only logged, so it never reaches or fails the client.
-- HAProxy 2.6 has no native request mirroring; core.httpclient exists since 2.5.
core.register_action("mirror", {"http-req"}, function(txn, url)
  local body = txn.sf:req_body() or ""
  local target = url .. txn.sf:path()
  local headers = {["content-type"] = {txn.sf:req_fhdr("content-type") or "application/json"}}
  core.register_task(function()
    local ok, err = pcall(function()
      core.httpclient():post{url = target, body = body, headers = headers, timeout = 10000}
    end)
    if not ok then
      core.Warning("mirror to " .. target .. " failed: " .. tostring(err))
    end
  end)
end, 1)
