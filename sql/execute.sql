--
-- execute: what a SQL job does, and what is recorded about it
--

-- the result is the first row of the last statement, as jsonb
SELECT jobq.enqueue($$SELECT 42 AS answer, 'forty-two' AS spelled$$) AS job \gset
SELECT wait_job(:job);
SELECT state, attempts, max_attempts, result, last_error, last_sqlstate,
       started_at >= created_at AS started_after_created,
       finished_at >= started_at AS finished_after_started,
       worker_pid IN (SELECT pid FROM pg_stat_activity
                       WHERE backend_type = 'jobq worker') AS ran_in_worker
  FROM jobq.status(:job);

-- multi-statement SQL; effects and result in one go
CREATE TABLE exec_log (n integer);
SELECT jobq.enqueue('INSERT INTO exec_log VALUES (1); INSERT INTO exec_log VALUES (2);
                     SELECT count(*) AS rows FROM exec_log') AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).result;
SELECT * FROM exec_log ORDER BY n;

-- a last statement that returns no rows gives a null result
SELECT jobq.enqueue('UPDATE exec_log SET n = n * 10') AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).result IS NULL AS null_result;
SELECT * FROM exec_log ORDER BY n;

-- a command too large to keep inline (stored out of line, in TOAST)
SELECT jobq.enqueue('SELECT length(' || quote_literal(string_agg(md5(i::text), '')) || ') AS n')
       AS job FROM generate_series(1, 1000) i \gset
SELECT wait_job(:job);
SELECT pg_column_size(command) > 8000 AS stored_large, result, length(command)
  FROM jobq.job_history WHERE id = :job;

-- a job that (as a superuser) updates its own row: its outcome is recorded
-- on the row as the job left it; one that deletes its own row leaves
-- nothing behind; the jobs after them run as usual
SELECT jobq.enqueue($$UPDATE jobq.job SET last_error = 'noted by itself'
                       WHERE command LIKE '%self-update marker%'$$) AS job \gset
SELECT wait_job(:job);
SELECT state, last_error FROM jobq.status(:job);
SELECT jobq.enqueue($$DELETE FROM jobq.job WHERE command LIKE '%self-delete marker%'$$) AS job \gset
SELECT wait_gone(:job) AS deleted_itself;
SELECT count(*) AS kept FROM jobq.job_history WHERE id = :job;
SELECT jobq.enqueue('SELECT 1 AS after') AS job \gset
SELECT wait_job(:job);

-- an error is kept, the job is retried until max_attempts, then fails
SELECT jobq.enqueue('SELECT 1/0', max_attempts => 3) AS job \gset
SELECT wait_job(:job);
SELECT state, attempts, last_error, last_sqlstate, result FROM jobq.status(:job);

-- a failed attempt rolls its effects back
SELECT jobq.enqueue('INSERT INTO exec_log VALUES (-1); SELECT 1/0',
                    max_attempts => 2) AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).attempts;
SELECT count(*) AS rolled_back_rows FROM exec_log WHERE n = -1;

-- fails twice, then succeeds on the third attempt (sequences ignore rollback)
CREATE SEQUENCE flaky_seq;
SELECT jobq.enqueue($$SELECT 10 / (nextval('flaky_seq') / 3) AS ok$$,
                    max_attempts => 5) AS job \gset
SELECT wait_job(:job);
SELECT state, attempts, result, last_error, last_sqlstate FROM jobq.status(:job);

-- the per-job timeout is enforced
SELECT jobq.enqueue('SELECT pg_sleep(60)', timeout => '100ms',
                    max_attempts => 1) AS job \gset
SELECT wait_job(:job);
SELECT state, last_error, last_sqlstate FROM jobq.status(:job);

-- and so is jobq.default_timeout
SET jobq.default_timeout = '100ms';
SELECT jobq.enqueue('SELECT pg_sleep(60)', max_attempts => 1) AS job \gset
RESET jobq.default_timeout;
SELECT wait_job(:job);
SELECT state, last_error, last_sqlstate FROM jobq.status(:job);

-- a job that catches its own error in plpgsql succeeds
SELECT jobq.enqueue($job$DO $do$ BEGIN PERFORM 1/0; EXCEPTION WHEN division_by_zero THEN NULL; END $do$$job$)
       AS job \gset
SELECT wait_job(:job);

-- statements that cannot run inside a transaction block fail cleanly
SELECT jobq.enqueue('VACUUM exec_log', max_attempts => 1) AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).last_error;
SELECT jobq.enqueue('CREATE INDEX CONCURRENTLY ON exec_log (n)', max_attempts => 1) AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).last_error;
SELECT jobq.enqueue('COMMIT', max_attempts => 1) AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).last_error;
SELECT jobq.enqueue('BEGIN; SELECT 1', max_attempts => 1) AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).last_error;
SELECT jobq.enqueue('COPY exec_log TO STDOUT', max_attempts => 1) AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).last_error, (jobq.status(:job)).last_sqlstate;
-- a syntax error is just an error of the job
SELECT jobq.enqueue('SELEC 1', max_attempts => 1) AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).last_error, (jobq.status(:job)).last_sqlstate;

-- the workers survived all of that
SELECT jobq.enqueue('SELECT ''still here'' AS status') AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).result;

-- a job enqueued for later waits for its run_at
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '2 seconds') AS job \gset
SELECT wait_job(:job);
SELECT started_at >= run_at AS started_after_run_at FROM jobq.status(:job);

-- jobq.jobs shows finished and unfinished jobs with the status columns
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour',
                    queue => 'later', priority => 5) AS job \gset
SELECT queue, state, priority, attempts, finished_at, result, worker_pid,
       owner, command
  FROM jobq.jobs WHERE id = :job;
SELECT count(*) > 10 AS many_finished FROM jobq.jobs WHERE finished_at IS NOT NULL;

-- a job is planned with a session's planner settings: the worker turns
-- some off for its own statements only, while they run
SELECT jobq.enqueue($$SELECT current_setting('enable_seqscan') AS seqscan,
                             current_setting('enable_sort') AS sort,
                             current_setting('enable_hashjoin') AS hashjoin,
                             current_setting('enable_mergejoin') AS mergejoin$$) AS job \gset
SELECT wait_job(:job);
SELECT (jobq.status(:job)).result;
