--
-- control: jobq.wait(), jobq.cancel() and jobq.retry()
--

-- wait returns the finished job's status; after a commit, the caller can
-- run a job synchronously
SELECT jobq.enqueue_task('jobq.noop', '{"sync": true}') AS job \gset
SELECT state, result, task FROM jobq.wait(:job);
SELECT (jobq.wait(jobq.enqueue($$SELECT 'a' || 'b' AS ab$$))).result;
-- a timeout gives the status as it is then
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour') AS later \gset
SELECT state, finished_at FROM jobq.wait(:later, '50 ms');
-- waiting honours query cancel (here, a statement timeout)
SET statement_timeout = '100ms';
SELECT jobq.wait(:later);
RESET statement_timeout;
-- bad calls
SELECT jobq.wait(NULL);
SELECT jobq.wait(:later, '-1 s');
SELECT jobq.wait(-42);

-- waiting in the transaction that enqueued the job runs it right there,
-- as its owner: its effects and its outcome commit or roll back with the
-- caller's transaction
CREATE TABLE ctl_here (v text);
BEGIN;
SELECT jobq.enqueue($$INSERT INTO ctl_here VALUES ('ran here') RETURNING v$$) AS mine \gset
SELECT state, attempts, result, worker_pid = pg_backend_pid() AS in_this_session
  FROM jobq.wait(:mine);
SELECT * FROM ctl_here;
ROLLBACK;
SELECT count(*) AS jobs FROM jobq.jobs WHERE id = :mine;
SELECT count(*) AS effects FROM ctl_here;
BEGIN;
SELECT (jobq.wait(jobq.enqueue_task('jobq.noop', '{"task": "here"}'))).result;
COMMIT;
-- one attempt: an error with attempts left leaves the job to the workers
BEGIN;
SELECT jobq.enqueue('SELECT count(*) / (SELECT count(*) FROM ctl_here) AS r',
                    max_attempts => 2) AS retried_here \gset
SELECT state, attempts, last_error, run_at > now() AS retry_later
  FROM jobq.wait(:retried_here);
INSERT INTO ctl_here VALUES ('now it divides');
COMMIT;
SELECT state, attempts, result FROM jobq.wait(:retried_here);
-- one that is not due yet is not run
BEGIN;
SELECT state FROM jobq.wait(jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour'));
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT jobq.wait(:later, '1 s');
ROLLBACK;

-- cancel a pending job: at once, in the caller's transaction
BEGIN;
SELECT jobq.cancel(:later);
SELECT state FROM jobq.jobs WHERE id = :later;
ROLLBACK;
SELECT state FROM jobq.jobs WHERE id = :later;
SELECT jobq.cancel(:later);
SELECT state, attempts, last_error, last_sqlstate, finished_at IS NOT NULL AS finished
  FROM jobq.status(:later);
-- a finished job cannot be cancelled
SELECT jobq.cancel(:later) AS again, jobq.cancel(:job) AS succeeded;
SELECT jobq.cancel(NULL);
SELECT jobq.cancel(-42);

-- cancel a running job: it is interrupted, its effects roll back, and it
-- is not retried although it has attempts left
CREATE TABLE ctl_effects (what text);
-- wait until a job is running; an error after a minute
CREATE FUNCTION wait_running(job bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 s';
BEGIN
    WHILE NOT EXISTS (SELECT 1 FROM jobq.jobs WHERE id = job AND state = 'running') LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'job % was not running within a minute', job;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN 'running';
END
$$;
SELECT jobq.enqueue($$INSERT INTO ctl_effects VALUES ('should not stay');
                      SELECT pg_sleep(60)$$, max_attempts => 5) AS running \gset
SELECT wait_running(:running);
SELECT jobq.cancel(:running);
SELECT state, attempts, last_error, last_sqlstate FROM jobq.status(:running);
SELECT count(*) AS effects FROM ctl_effects;

-- a task is cancelled the same way
SELECT jobq.enqueue_task('jobq.sleep', '{"seconds": 60}') AS sleeping \gset
SELECT wait_running(:sleeping);
SELECT jobq.cancel(:sleeping);
SELECT state, attempts, last_error FROM jobq.status(:sleeping);

-- a job that catches the cancel and carries on is rolled back all the same
CREATE FUNCTION stubborn() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM pg_sleep(60);
    EXCEPTION WHEN query_canceled THEN
        INSERT INTO ctl_effects VALUES ('caught the cancel');
    END;
    RETURN 'carried on';
END
$$;
SELECT jobq.enqueue('SELECT stubborn() AS outcome') AS stubborn \gset
SELECT wait_running(:stubborn);
SELECT jobq.cancel(:stubborn);
SELECT state, result, last_error FROM jobq.status(:stubborn);
SELECT count(*) AS effects FROM ctl_effects;

-- the workers go on with the next jobs
SELECT jobq.enqueue('SELECT 42 AS after_cancel') AS after \gset
SELECT result, worker_pid <> pg_backend_pid() AS in_worker FROM jobq.wait(:after);

-- retry: a failed job runs again, its attempts counted from zero
SELECT jobq.enqueue('SELECT 1 / (SELECT count(*) FROM ctl_effects)::int AS ratio',
                    max_attempts => 1) AS failing \gset
SELECT state, attempts, last_error FROM jobq.wait(:failing);
INSERT INTO ctl_effects VALUES ('now it divides');
SELECT jobq.retry(:failing);
SELECT state, attempts, result, last_error FROM jobq.wait(:failing);
-- a cancelled job too
SELECT jobq.retry(:later);
SELECT state, attempts, result FROM jobq.wait(:later);
-- not a succeeded, pending or running one
SELECT jobq.retry(:failing) AS succeeded;
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour') AS pending \gset
SELECT jobq.retry(:pending) AS pending;
SELECT jobq.retry(NULL);
SELECT jobq.retry(-42);

-- only the owner (or a member of it, or a superuser) may cancel or retry;
-- others do not see the job at all, unless they are in pg_monitor
CREATE ROLE regress_jobq_ctl_owner LOGIN;
CREATE ROLE regress_jobq_ctl_other LOGIN;
CREATE ROLE regress_jobq_ctl_monitor LOGIN IN ROLE pg_monitor;
GRANT USAGE ON SCHEMA jobq TO regress_jobq_ctl_owner, regress_jobq_ctl_other,
                              regress_jobq_ctl_monitor;
SET ROLE regress_jobq_ctl_owner;
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour') AS owned \gset
SELECT jobq.enqueue('SELECT 1/0', max_attempts => 1) AS owned_failing \gset
RESET ROLE;
SELECT state FROM jobq.wait(:owned_failing);
-- (job ids depend on what ran before: errors show their SQLSTATE only)
\set VERBOSITY sqlstate
SET ROLE regress_jobq_ctl_other;
SELECT jobq.cancel(:owned);
SELECT jobq.retry(:owned_failing);
SELECT jobq.wait(:owned, '10 ms');
\set VERBOSITY default
SET ROLE regress_jobq_ctl_monitor;
SELECT error_of(format('SELECT jobq.cancel(%s)', :owned), :owned);
SELECT error_of(format('SELECT jobq.retry(%s)', :owned_failing), :owned_failing);
SELECT state FROM jobq.wait(:owned, '10 ms');
SET ROLE regress_jobq_ctl_owner;
SELECT jobq.cancel(:owned);
SELECT jobq.retry(:owned_failing);
RESET ROLE;
SELECT state, attempts FROM jobq.wait(:owned_failing);
SELECT jobq.cancel(:pending);
SELECT jobq.cancel(:owned_failing);
SELECT state, owner FROM jobq.jobs WHERE id IN (:owned, :owned_failing) ORDER BY id;

DROP OWNED BY regress_jobq_ctl_owner, regress_jobq_ctl_other, regress_jobq_ctl_monitor;
DROP ROLE regress_jobq_ctl_owner, regress_jobq_ctl_other, regress_jobq_ctl_monitor;
