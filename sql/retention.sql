--
-- retention: finished jobs stay visible for jobq.retention, then go
--
-- A reload reaches a running worker at a moment the test cannot see, so
-- each change of jobq.retention restarts the pool: workers started after
-- the reload have the new setting.
ALTER SYSTEM SET jobq.retention = 0;
ALTER SYSTEM SET jobq.workers = 0;
SELECT pg_reload_conf();
SELECT wait_workers(0);
ALTER SYSTEM RESET jobq.workers;
SELECT pg_reload_conf();
SELECT wait_workers(2);
SELECT jobq.enqueue('SELECT 1') AS job \gset
SELECT wait_gone(:job) AS deleted_on_finish;
SELECT count(*) AS kept FROM jobq.job_history WHERE id = :job;

-- jobq.cancel() knows that it cancelled a job though nothing is kept: a
-- pending one, and a running one (wait_running() is control's)
CREATE TABLE ret_effects (x integer);
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour') AS later \gset
SELECT jobq.cancel(:later) AS pending_cancelled;
SELECT jobq.enqueue($$INSERT INTO ret_effects VALUES (1);
                      SELECT pg_sleep(60)$$) AS running \gset
SELECT wait_running(:running);
SELECT jobq.cancel(:running) AS running_cancelled;
SELECT count(*) AS effects FROM ret_effects;
SELECT count(*) AS visible FROM jobq.jobs WHERE id IN (:later, :running);

ALTER SYSTEM SET jobq.retention = '1s';
ALTER SYSTEM SET jobq.workers = 0;
SELECT pg_reload_conf();
SELECT wait_workers(0);
ALTER SYSTEM RESET jobq.workers;
SELECT pg_reload_conf();
SELECT wait_workers(2);
-- a finished job that is seen finished in jobq.jobs (wait_job reads it
-- there) ...
SELECT jobq.enqueue('SELECT 1') AS job \gset
SELECT wait_job(:job);
-- ... is pruned once older than the retention, while one that finished
-- later than that (here, a row dated an hour ahead) stays
INSERT INTO jobq.job_history (id, queue, state, priority, run_at, attempts,
                              max_attempts, owner, command, created_at, finished_at)
VALUES (nextval('jobq.job_id_seq'), 'default', 'succeeded', 0, now(), 1, 1,
        current_user::regrole, 'SELECT 1', now(), now() + interval '1 hour')
RETURNING id AS ahead \gset
SELECT wait_gone(:job) AS pruned;
SELECT count(*) AS kept FROM jobq.job_history WHERE id = :ahead;
DELETE FROM jobq.job_history WHERE id = :ahead;

ALTER SYSTEM RESET jobq.retention;
SELECT pg_reload_conf();
