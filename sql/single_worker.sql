--
-- single_worker: with one worker, jobs run in priority order, FIFO within
-- a priority, and nothing one job leaves in the session reaches the next
--
ALTER SYSTEM SET jobq.workers = 0;
SELECT pg_reload_conf();
SELECT wait_workers(0);

-- with no workers, nothing runs
CREATE TABLE run_order (label text, seq bigserial);
SELECT count(*) AS enqueued FROM (
    SELECT jobq.enqueue(format('INSERT INTO run_order (label) VALUES (%L)', label),
                        priority => prio)
      FROM (VALUES ('low-1', -5), ('normal-1', 0), ('high-1', 10), ('normal-2', 0),
                   ('low-2', -5), ('high-2', 10), ('normal-3', 0)) AS v(label, prio)
     ORDER BY label DESC) AS enqueued;
SELECT pg_sleep(0.5);
SELECT count(*) AS pending FROM jobq.jobs WHERE state = 'pending' AND command LIKE '%run_order%';

ALTER SYSTEM SET jobq.workers = 1;
SELECT pg_reload_conf();
SELECT wait_workers(1);
SELECT bool_and(wait_job(id) = 'succeeded') AS all_ran
  FROM jobq.jobs WHERE command LIKE '%run_order%';
-- enqueued in label order descending, run by priority then FIFO
SELECT label FROM run_order ORDER BY seq;

-- a job that leaves things behind in its session ...
SELECT jobq.enqueue($$
    SET work_mem = '77MB';
    SET search_path = pg_catalog;
    CREATE TEMP TABLE leftover (x integer);
    PREPARE leftover_stmt AS SELECT 1;
    DECLARE leftover_cursor CURSOR WITH HOLD FOR SELECT 1;
    SELECT pg_advisory_lock(4242);
    SELECT nextval('public.run_order_seq_seq');
    SELECT current_setting('work_mem') AS work_mem,
           to_regclass('pg_temp.leftover') IS NOT NULL AS temp_table,
           (SELECT count(*) FROM pg_prepared_statements) AS prepared,
           (SELECT count(*) FROM pg_cursors) AS cursors,
           (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                                            AND pid = pg_backend_pid()) AS advisory_locks
$$) AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).result;

-- ... and the next job on the same (only) worker sees none of it
SELECT jobq.enqueue($$
    SELECT current_setting('work_mem') AS work_mem,
           current_setting('search_path') AS search_path,
           to_regclass('pg_temp.leftover') IS NOT NULL AS temp_table,
           (SELECT count(*) FROM pg_prepared_statements) AS prepared,
           (SELECT count(*) FROM pg_cursors) AS cursors,
           (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                                            AND pid = pg_backend_pid()) AS advisory_locks
$$) AS job2 \gset
SELECT wait_job(:job2);
SELECT (jobq.status(:job2)).result;
SELECT (jobq.status(:job)).worker_pid = (jobq.status(:job2)).worker_pid AS same_worker;
-- currval of a sequence used by the previous job is gone too
SELECT jobq.enqueue($$SELECT currval('public.run_order_seq_seq')$$, max_attempts => 1) AS job3 \gset
SELECT wait_job(:job3);
SELECT (jobq.status(:job3)).last_sqlstate;

-- a command the worker keeps as a prepared plan still resolves names
-- through each owner's search_path and runs with each owner's privileges
CREATE TABLE public.whoami (who text);
GRANT INSERT ON public.whoami TO regress_jobq_bob;
CREATE TABLE sec_alice.whoami (who text);
GRANT INSERT ON sec_alice.whoami TO regress_jobq_alice;
SET ROLE regress_jobq_alice;
SELECT count(jobq.enqueue('INSERT INTO whoami VALUES (current_user)'))
  FROM generate_series(1, 3);
RESET ROLE;
SET ROLE regress_jobq_bob;
SELECT count(jobq.enqueue('INSERT INTO whoami VALUES (current_user)'))
  FROM generate_series(1, 3);
RESET ROLE;
SELECT count(wait_job(id)) FROM jobq.jobs WHERE command LIKE '%whoami%';
SELECT state, count(*) FROM jobq.jobs WHERE command LIKE '%whoami%' GROUP BY state;
SELECT 'sec_alice' AS schema, who, count(*) FROM sec_alice.whoami GROUP BY who
UNION ALL
SELECT 'public', who, count(*) FROM public.whoami GROUP BY who
ORDER BY 1, 2;

-- a prepared plan never serves another owner: privileges on a schema
-- named in the command are checked when it is analysed
CREATE SCHEMA adm;
CREATE FUNCTION adm.secret() RETURNS text LANGUAGE sql AS $$SELECT 'secret'$$;
GRANT USAGE ON SCHEMA adm TO regress_jobq_alice;
SET ROLE regress_jobq_alice;
SELECT count(jobq.enqueue('SELECT adm.secret() AS s')) FROM generate_series(1, 2);
RESET ROLE;
SET ROLE regress_jobq_bob;
SELECT jobq.enqueue('SELECT adm.secret() AS s', max_attempts => 1) AS bob_job \gset
RESET ROLE;
SELECT count(wait_job(id)) FROM jobq.jobs WHERE command = 'SELECT adm.secret() AS s';
SELECT owner, state, last_sqlstate, count(*)
  FROM jobq.jobs WHERE command = 'SELECT adm.secret() AS s'
 GROUP BY 1, 2, 3 ORDER BY 1;

-- a worker whose job is cancelled by pg_cancel_backend keeps running
SELECT jobq.enqueue('SELECT pg_sleep(60)', max_attempts => 1) AS job \gset
DO $$
BEGIN
    WHILE NOT EXISTS (SELECT 1 FROM pg_stat_activity
                       WHERE backend_type = 'jobq worker'
                         AND query = 'SELECT pg_sleep(60)') LOOP
        PERFORM pg_sleep(0.01);
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
END
$$;
SELECT pg_cancel_backend(pid) FROM pg_stat_activity
 WHERE backend_type = 'jobq worker' AND query = 'SELECT pg_sleep(60)';
SELECT wait_job(:job);
SELECT (jobq.status(:job)).last_error;
SELECT jobq.enqueue('SELECT 1 AS alive') AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).result;

-- a job that cancels a job its own worker holds later in the same batch:
-- the cancelled job never runs.  127 quick jobs first, so that the claims
-- have grown to whole batches when the pairs come.
ALTER SYSTEM SET jobq.workers = 0;
SELECT pg_reload_conf();
SELECT wait_workers(0);
CREATE TABLE batch_cancel_log (pair integer, xid xid8, cancelled boolean);
CREATE TABLE batch_cancel_effects (pair integer);
SELECT count(jobq.enqueue('SELECT 1 AS filler', priority => 10))
  FROM generate_series(1, 127);
SELECT count(*) AS enqueued FROM (
    SELECT jobq.enqueue(CASE kind
        WHEN 'a' THEN format($$INSERT INTO batch_cancel_log
                                 SELECT %s, pg_current_xact_id(), jobq.cancel(id)
                                   FROM jobq.jobs
                                  WHERE command = 'INSERT INTO batch_cancel_effects VALUES (%s)'$$,
                             pair, pair)
        ELSE format('INSERT INTO batch_cancel_effects VALUES (%s)', pair) END,
        priority => 5)
      FROM generate_series(1, 20) AS pair, (VALUES ('a'), ('b')) AS k(kind)
     ORDER BY pair, kind) AS enqueued;
ALTER SYSTEM SET jobq.workers = 1;
SELECT pg_reload_conf();
SELECT wait_workers(1);
SELECT count(wait_job(id)) FROM jobq.jobs WHERE command LIKE '%batch_cancel%';
SELECT CASE WHEN command LIKE 'INSERT INTO batch_cancel_log%' THEN 'canceller'
            ELSE 'cancelled' END AS job, state, count(*)
  FROM jobq.jobs WHERE command LIKE '%batch_cancel%' GROUP BY 1, 2 ORDER BY 1;
SELECT count(*) AS effects_of_cancelled_jobs FROM batch_cancel_effects;
SELECT count(*) AS cancels, bool_and(cancelled) AS all_true FROM batch_cancel_log;
-- the pairs did share batches: a canceller and the next one ran in one
-- execution transaction, with the cancelled job claimed between them
SELECT count(*) > 0 AS in_one_batch
  FROM batch_cancel_log a JOIN batch_cancel_log b
    ON b.pair = a.pair + 1 AND b.xid = a.xid;

ALTER SYSTEM RESET jobq.workers;
SELECT pg_reload_conf();
SELECT wait_workers(2);
