-- Deliver parents' ends to children of this queue, sent through another queue's outbox (see
-- "Flows" in common.lua): ARGV[6] the result expiry of children this call ends, ARGV[7] packs
-- per delivery 4 fields: child id, parent id, '1' if the parent ended DONE (else ''), and how
-- it ended (the text of an UpstreamFailed or Skipped error). Idempotent: a delivery repeated
-- (the outbox read twice, or again after a crash) changes nothing.
-- Returns the outbox marker only (see with_outbox): this queue's own outbox got deliveries.
local RX = ARGV[6]
local A = unframe(ARGV[7])
for b = 1, #A, 4 do
  flows().arrive(A[b], A[b + 1], A[b + 2] == '1', A[b + 3], RX)
end
settle()
flush()
if FLOW_WOKE then wake_workers() end
return with_outbox({})
