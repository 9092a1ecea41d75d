--
-- setup: install jobq and the helpers the other tests use
--
CREATE EXTENSION jobq;

SELECT extname, extversion = (SELECT default_version FROM pg_available_extensions
                              WHERE name = 'jobq') AS default_version
  FROM pg_extension WHERE extname = 'jobq';

-- Every wait helper polls its condition and raises an error (never
-- returns) when max_wait passes first, so that a test cannot pass on a
-- wait that gave up.

-- wait until a job is finished; returns its final state
CREATE FUNCTION wait_job(job bigint, max_wait interval DEFAULT '60s')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    deadline timestamptz := clock_timestamp() + max_wait;
BEGIN
    LOOP
        SELECT state INTO st FROM jobq.jobs WHERE id = job;
        IF st IN ('succeeded', 'failed', 'cancelled') THEN
            RETURN st;
        END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'job % did not finish within % (state %)', job, max_wait, st;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
$$;

-- wait until a job has left jobq.jobs; returns true
CREATE FUNCTION wait_gone(job bigint, max_wait interval DEFAULT '60s')
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + max_wait;
BEGIN
    WHILE EXISTS (SELECT 1 FROM jobq.jobs WHERE id = job) LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'job % was still in jobq.jobs after %', job, max_wait;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN true;
END
$$;

-- wait until a worker runs the job (and, with in_sleep, waits in
-- pg_sleep() in it)
CREATE FUNCTION wait_started(job bigint, in_sleep boolean DEFAULT false,
                             max_wait interval DEFAULT '60s')
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + max_wait;
BEGIN
    PERFORM pg_stat_clear_snapshot();
    WHILE NOT EXISTS (SELECT 1 FROM jobq.workers w JOIN pg_stat_activity a ON a.pid = w.pid
                       WHERE w.job_id = job
                         AND (NOT in_sleep OR a.wait_event = 'PgSleep')) LOOP
        PERFORM pg_stat_clear_snapshot();
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'job % did not start within %', job, max_wait;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN true;
END
$$;

-- wait until the pool has n workers (after ALTER SYSTEM + reload);
-- returns n
CREATE FUNCTION wait_workers(n integer, max_wait interval DEFAULT '60s')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + max_wait;
    live integer;
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        SELECT count(*) INTO live FROM pg_stat_activity
         WHERE backend_type = 'jobq worker';
        IF live = n THEN
            RETURN live;
        END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'the pool had % workers, not %, after %', live, n, max_wait;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
$$;

-- the error a statement raises (SQLSTATE and message), with the job id
-- that it names replaced by <id>, since ids depend on what ran before
CREATE FUNCTION error_of(stmt text, id bigint)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || replace(SQLERRM, id::text, '<id>');
END
$$;

-- the pool starts once this database exists
SELECT wait_workers(2);
