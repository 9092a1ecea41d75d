--
-- security: a job runs with exactly its owner's privileges, and users see
-- and touch only their own jobs, only through the API
--
CREATE ROLE regress_jobq_alice LOGIN;
CREATE ROLE regress_jobq_bob LOGIN;
CREATE ROLE regress_jobq_group NOLOGIN;
GRANT USAGE ON SCHEMA jobq TO regress_jobq_alice, regress_jobq_bob, regress_jobq_group;
CREATE TABLE sec_secret (x integer);
CREATE SCHEMA sec_alice AUTHORIZATION regress_jobq_alice;
ALTER ROLE regress_jobq_alice SET search_path = sec_alice, public;

-- without USAGE on schema jobq, nothing works
CREATE ROLE regress_jobq_outsider LOGIN;
SET ROLE regress_jobq_outsider;
SELECT jobq.enqueue('SELECT 1');
RESET ROLE;

-- a job runs as the role that enqueued it
SET ROLE regress_jobq_alice;
SELECT jobq.enqueue($$SELECT current_user AS cu, current_setting('search_path') AS sp$$) AS job \gset
RESET ROLE;
SELECT wait_job(:job);
SELECT (jobq.status(:job)).result, (jobq.status(:job)).owner;

-- with the owner's privileges, not the worker's
SET ROLE regress_jobq_alice;
SELECT jobq.enqueue('INSERT INTO public.sec_secret VALUES (1)', max_attempts => 1) AS job \gset
RESET ROLE;
SELECT wait_job(:job);
SELECT (jobq.status(:job)).last_error, (jobq.status(:job)).last_sqlstate;
SELECT count(*) FROM sec_secret;

-- and cannot switch identity
SET ROLE regress_jobq_alice;
SELECT jobq.enqueue('SET ROLE regress_jobq_bob', max_attempts => 1) AS j1,
       jobq.enqueue('RESET ROLE', max_attempts => 1) AS j2,
       jobq.enqueue('SET SESSION AUTHORIZATION regress_jobq_bob', max_attempts => 1) AS j3,
       jobq.enqueue('SET LOCAL ROLE regress_jobq_bob', max_attempts => 1) AS j4 \gset
RESET ROLE;
SELECT count(wait_job(id)) FROM jobq.jobs WHERE id IN (:j1, :j2, :j3, :j4);
SELECT command, state, last_error, last_sqlstate
  FROM jobq.jobs WHERE id IN (:j1, :j2, :j3, :j4) ORDER BY id;

-- the owner's own objects resolve through the owner's search_path
SET ROLE regress_jobq_alice;
CREATE TABLE sec_alice.notes (t text);
SELECT jobq.enqueue($$INSERT INTO notes VALUES ('from a job')$$) AS job \gset
RESET ROLE;
SELECT wait_job(:job);
SELECT * FROM sec_alice.notes;

-- a role sees only its own jobs
CREATE FUNCTION status_sqlstate(job bigint) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM jobq.status(job);
    RETURN 'visible';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '\d+', 'N');
END
$$;
SET ROLE regress_jobq_bob;
SELECT count(*) AS alice_jobs_seen_by_bob FROM jobq.jobs WHERE owner = 'regress_jobq_alice'::regrole;
SELECT status_sqlstate(:job) AS alice_job_for_bob;
SELECT jobq.enqueue('SELECT 1') AS bob_job \gset
SELECT count(*) AS own_jobs FROM jobq.jobs;
RESET ROLE;
SET ROLE regress_jobq_alice;
SELECT count(*) AS bob_jobs_seen_by_alice FROM jobq.jobs WHERE id = :bob_job;
RESET ROLE;
-- superusers see all
SELECT count(DISTINCT owner) >= 3 AS superuser_sees_all FROM jobq.jobs;

-- nobody writes the tables directly
SET ROLE regress_jobq_alice;
INSERT INTO jobq.job (queue, max_attempts, owner, command)
    VALUES ('default', 1, 'regress_jobq_alice', 'SELECT 1');
UPDATE jobq.job SET priority = 1000;
DELETE FROM jobq.job_history;
TRUNCATE jobq.job;
SELECT nextval('jobq.job_id_seq');
RESET ROLE;

-- a role that cannot log in cannot own jobs
SET ROLE regress_jobq_group;
SELECT jobq.enqueue('SELECT 1');
RESET ROLE;

-- an owner that lost LOGIN before the job ran: the job fails, no retry
BEGIN;
SET LOCAL ROLE regress_jobq_alice;
SELECT jobq.enqueue('SELECT 1', max_attempts => 5) AS job \gset
RESET ROLE;
ALTER ROLE regress_jobq_alice NOLOGIN;
COMMIT;
SELECT wait_job(:job);
SELECT (jobq.status(:job)).attempts, (jobq.status(:job)).last_error,
       (jobq.status(:job)).last_sqlstate;
ALTER ROLE regress_jobq_alice LOGIN;

-- an owner dropped before the job ran: the job fails, no retry
CREATE ROLE regress_jobq_carol LOGIN;
GRANT USAGE ON SCHEMA jobq TO regress_jobq_carol;
BEGIN;
SET LOCAL ROLE regress_jobq_carol;
SELECT jobq.enqueue('SELECT 1', max_attempts => 5) AS job \gset
RESET ROLE;
REVOKE USAGE ON SCHEMA jobq FROM regress_jobq_carol;
DROP ROLE regress_jobq_carol;
COMMIT;
SELECT wait_job(:job);
SELECT (jobq.status(:job)).attempts,
       (jobq.status(:job)).last_error ~ '^role with OID \d+ does not exist$' AS dropped_role_error,
       (jobq.status(:job)).last_sqlstate;

-- deferred triggers of a job fire at the end of the job, as its owner
SET ROLE regress_jobq_alice;
CREATE TABLE sec_alice.deferred_t (x integer);
CREATE TABLE sec_alice.trigger_log (who text);
CREATE FUNCTION sec_alice.log_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sec_alice.trigger_log VALUES (current_user);
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER log_user AFTER INSERT ON sec_alice.deferred_t
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sec_alice.log_user();
SELECT jobq.enqueue('INSERT INTO sec_alice.deferred_t VALUES (1)') AS job \gset
RESET ROLE;
SELECT wait_job(:job);
SELECT who FROM sec_alice.trigger_log;

-- a deferred constraint violated by a job fails that job only
SET ROLE regress_jobq_alice;
CREATE TABLE sec_alice.uniq (x integer UNIQUE DEFERRABLE INITIALLY DEFERRED);
SELECT jobq.enqueue('INSERT INTO sec_alice.uniq VALUES (1), (1)', max_attempts => 1) AS bad,
       jobq.enqueue('INSERT INTO sec_alice.uniq VALUES (2)', max_attempts => 1) AS good \gset
RESET ROLE;
SELECT wait_job(:bad) AS bad, wait_job(:good) AS good;
SELECT (jobq.status(:bad)).last_sqlstate, (jobq.status(:good)).state;
SELECT x FROM sec_alice.uniq ORDER BY x;

-- jobq's own statements resolve operators in pg_catalog only: an operator
-- planted in public, where the worker's default search_path would find it
-- first for an enum comparison, is never called
CREATE TABLE hijack_log (at timestamptz);
CREATE FUNCTION public.hijack_eq(jobq.job_state, jobq.job_state) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.hijack_log VALUES (now());
    RETURN $1::text = $2::text;
END
$$;
CREATE OPERATOR public.= (LEFTARG = jobq.job_state, RIGHTARG = jobq.job_state,
                          FUNCTION = public.hijack_eq);
ANALYZE jobq.job;
SELECT jobq.enqueue('SELECT 1') AS job \gset
SELECT wait_job(:job);
SELECT count(*) AS hijacked FROM hijack_log;
DROP OPERATOR public.= (jobq.job_state, jobq.job_state);
DROP FUNCTION public.hijack_eq(jobq.job_state, jobq.job_state);

-- the owner's own statement_timeout applies to its jobs
ALTER ROLE regress_jobq_bob SET statement_timeout = '100ms';
SET ROLE regress_jobq_bob;
SELECT jobq.enqueue('SELECT pg_sleep(30)', max_attempts => 1) AS job \gset
RESET ROLE;
SELECT wait_job(:job);
SELECT (jobq.status(:job)).last_sqlstate;
ALTER ROLE regress_jobq_bob RESET statement_timeout;

-- a running job shows in jobq.running_jobs(), and as running in jobq.jobs,
-- to its owner, to superusers and to members of pg_monitor; other roles
-- do not see it
CREATE TABLE run_gate (open boolean);
GRANT SELECT ON run_gate TO regress_jobq_alice;
SET ROLE regress_jobq_alice;
SELECT jobq.enqueue($job$DO $d$BEGIN
    WHILE NOT EXISTS (SELECT FROM public.run_gate WHERE open) LOOP
        PERFORM pg_sleep(0.01);
    END LOOP;
END$d$$job$) AS job \gset
RESET ROLE;
SELECT set_config('regress.job', :'job', false) IS NOT NULL AS noted;
DO $$BEGIN
    FOR i IN 1..6000 LOOP
        EXIT WHEN EXISTS (SELECT FROM jobq.running_jobs()
                           WHERE id = current_setting('regress.job')::bigint);
        PERFORM pg_sleep(0.01);
    END LOOP;
END$$;
SELECT count(*) AS superuser_sees, bool_and(attempts = 1) AS first_attempt
  FROM jobq.running_jobs() WHERE id = :job;
SET ROLE regress_jobq_alice;
SELECT count(*) AS owner_sees FROM jobq.running_jobs() WHERE id = :job;
SELECT state, attempts, worker_pid IS NOT NULL AS has_worker FROM jobq.status(:job);
RESET ROLE;
SET ROLE regress_jobq_bob;
SELECT count(*) AS other_role_sees FROM jobq.running_jobs();
RESET ROLE;
GRANT pg_monitor TO regress_jobq_bob;
SET ROLE regress_jobq_bob;
SELECT count(*) AS monitor_sees FROM jobq.running_jobs() WHERE id = :job;
RESET ROLE;
REVOKE pg_monitor FROM regress_jobq_bob;
INSERT INTO run_gate VALUES (true);
SELECT wait_job(:job);
SELECT state, attempts FROM jobq.status(:job);
