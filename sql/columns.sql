--
-- columns: a column that an upgrade adds to jobq.job and jobq.job_history
-- (and to the status type and jobq.jobs) reaches the history and
-- jobq.status() on every way a job ends, with no change to the library:
-- the history row is built from the job's row by column name
--
ALTER TABLE jobq.job ADD COLUMN extra text;
ALTER TABLE jobq.job_history ADD COLUMN extra text;
ALTER TYPE jobq.job_status ADD ATTRIBUTE extra text;
CREATE OR REPLACE VIEW jobq.jobs WITH (security_invoker = true) AS
    SELECT j.id, j.queue,
           CASE WHEN r.id IS NOT NULL OR j.lease_expires_at IS NOT NULL
                THEN 'running'::jobq.job_state ELSE 'pending' END AS state,
           j.priority, COALESCE(r.attempts, j.attempts) AS attempts,
           j.max_attempts, COALESCE(j.not_before, j.run_at) AS run_at, j.created_at,
           COALESCE(r.started_at, j.started_at) AS started_at,
           NULL::timestamptz AS finished_at, NULL::jsonb AS result,
           j.last_error, j.last_sqlstate, r.worker_pid, j.owner, j.command,
           j.task, j.payload, j.dedup_key, j.depends_on, j.executor, j.extra
      FROM jobq.job j LEFT JOIN jobq.running_jobs() r ON r.id = j.id
    UNION ALL
    SELECT id, queue, state, priority, attempts, max_attempts, run_at,
           created_at, started_at, finished_at, result, last_error,
           last_sqlstate, worker_pid, owner, command, task, payload, dedup_key,
           depends_on, executor, extra
      FROM jobq.job_history;
CREATE TABLE col_effects (v text);

-- a worker's chunk: succeeded, and failed
SELECT jobq.enqueue('SELECT 1 AS one', run_at => now() + interval '1 hour') AS ok_job,
       jobq.enqueue('SELECT 1/0', max_attempts => 1, run_at => now() + interval '1 hour') AS bad_job \gset
UPDATE jobq.job SET extra = 'kept:' || id, run_at = now() WHERE id IN (:ok_job, :bad_job);
SELECT wait_job(:ok_job), wait_job(:bad_job);
-- jobq.cancel() of a pending job, and the job that waited for it
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour') AS later \gset
SELECT jobq.enqueue('SELECT 2', depends_on => ARRAY[:later]::bigint[]) AS waiting \gset
UPDATE jobq.job SET extra = 'kept:' || id WHERE id IN (:later, :waiting);
SELECT jobq.cancel(:later);
-- a job run in place by jobq.wait()
BEGIN;
SELECT jobq.enqueue($$INSERT INTO col_effects VALUES ('here')$$) AS here \gset
UPDATE jobq.job SET extra = 'kept:' || id WHERE id = :here;
SELECT state FROM jobq.wait(:here);
COMMIT;
SELECT id IN (:ok_job, :bad_job, :later, :waiting, :here) AS ours, state,
       extra = 'kept:' || id AS extra_kept
  FROM jobq.job_history WHERE id IN (:ok_job, :bad_job, :later, :waiting, :here)
 ORDER BY id;
SELECT (jobq.status(:ok_job)).extra = 'kept:' || :ok_job AS in_status;

-- the extension as it was
DROP EXTENSION jobq;
CREATE EXTENSION jobq;
DROP TABLE col_effects;
