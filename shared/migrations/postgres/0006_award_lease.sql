-- An award is published, then marked delivered. While a worker publishes it, it holds a lease
-- (claimed_until); a worker that dies before marking it leaves the lease to run out, and another
-- publishes it again with the same id.
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS claimed_until TIMESTAMPTZ;
