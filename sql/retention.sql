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
