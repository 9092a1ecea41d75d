--
-- retention: finished jobs stay visible for jobq.retention, then go
--
ALTER SYSTEM SET jobq.retention = 0;
SELECT pg_reload_conf();
SELECT jobq.enqueue('SELECT 1') AS job \gset
SELECT wait_gone(:job) AS deleted_on_finish;
-- also by workers that never kept a finished job (fresh processes)
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
SELECT pg_reload_conf();
SELECT pg_sleep(0.2);
SELECT jobq.enqueue('SELECT 1') AS job \gset
SELECT wait_job(:job);
-- still visible right after it finished ...
SELECT count(*) AS visible FROM jobq.jobs WHERE id = :job;
-- ... and pruned once older than the retention
SELECT wait_gone(:job) AS pruned;
-- unfinished jobs are never pruned
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour') AS later \gset
SELECT pg_sleep(1.5);
SELECT state FROM jobq.status(:later);

ALTER SYSTEM RESET jobq.retention;
SELECT pg_reload_conf();
