--
-- attacks: what a role with nothing but USAGE on schema jobq tries against
-- other roles and the pool, and what stops it
--
CREATE ROLE regress_jobq_mallory LOGIN;
GRANT USAGE ON SCHEMA jobq TO regress_jobq_mallory;
CREATE SCHEMA sec_mallory AUTHORIZATION regress_jobq_mallory;
CREATE TABLE sec_mallory.effects (t text);
ALTER TABLE sec_mallory.effects OWNER TO regress_jobq_mallory;
CREATE FUNCTION is_super(r text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT rolsuper FROM pg_roles WHERE rolname = r $$;
-- run a statement; its error's SQLSTATE and message, numbers left out
CREATE FUNCTION sec_try(cmd text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE cmd;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '\d+', 'N', 'g');
END
$$;

-- one worker, a fresh process: the jobs below share its session
ALTER SYSTEM SET jobq.workers = 0;
SELECT pg_reload_conf();
SELECT wait_workers(0);
ALTER SYSTEM SET jobq.workers = 1;
ALTER SYSTEM SET jobq.cancel_grace = '1s';
SELECT pg_reload_conf();
SELECT wait_workers(1);

--
-- 1. session state does not cross owners
--
-- jobs that use only SQL, PL/pgSQL and built-in functions leave nothing
-- behind: the worker switches owners in place (the first PL/pgSQL block a
-- fresh worker runs is no exception)
SELECT jobq.enqueue($$DO $do$BEGIN PERFORM 1; END$do$;
                      SELECT pg_backend_pid() AS pid$$) AS s1 \gset
SELECT wait_job(:s1);
SET ROLE regress_jobq_mallory;
SELECT jobq.enqueue('SELECT pg_backend_pid() AS pid') AS m1 \gset
RESET ROLE;
SELECT wait_job(:m1);
SELECT (SELECT result FROM jobq.jobs WHERE id = :s1) =
       (SELECT result FROM jobq.jobs WHERE id = :m1) AS same_session;

-- a superuser's job leaves a named dblink connection, a postgres_fdw
-- connection and a custom setting in its session
CREATE EXTENSION dblink;
CREATE EXTENSION postgres_fdw;
CREATE SERVER sec_loopback FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (dbname 'contrib_regression');
CREATE USER MAPPING FOR CURRENT_USER SERVER sec_loopback;
CREATE TABLE sec_remote_src (x integer);
INSERT INTO sec_remote_src VALUES (1);
CREATE FOREIGN TABLE sec_remote (x integer) SERVER sec_loopback
    OPTIONS (table_name 'sec_remote_src');
SELECT jobq.enqueue($$
    SELECT public.dblink_connect('kept', 'dbname=contrib_regression');
    SELECT pg_catalog.set_config('app.secret', 'hunter2', false);
    SELECT count(*), pg_backend_pid() AS pid FROM public.sec_remote$$) AS s2 \gset
SELECT wait_job(:s2);
-- ... and the next job, another role's, on the same one-worker pool finds
-- none of it: it runs in a fresh process
SET ROLE regress_jobq_mallory;
SELECT jobq.enqueue($$
    SELECT pg_catalog.current_setting('app.secret', true) AS secret,
           (SELECT count(*) FROM public.postgres_fdw_get_connections()) AS fdw_connections,
           public.dblink_get_connections() AS dblink_connections,
           pg_backend_pid() AS pid$$) AS m2 \gset
SELECT jobq.enqueue($$SELECT public.dblink_exec('kept', 'ALTER ROLE regress_jobq_mallory SUPERUSER')$$,
                    max_attempts => 1) AS m3 \gset
RESET ROLE;
SELECT wait_job(:m2), wait_job(:m3);
SELECT result - 'pid' AS what_mallory_saw FROM jobq.jobs WHERE id = :m2;
SELECT (SELECT result->'pid' FROM jobq.jobs WHERE id = :s2) <>
       (SELECT result->'pid' FROM jobq.jobs WHERE id = :m2) AS fresh_session;
SELECT state FROM jobq.jobs WHERE id = :m3;
SELECT is_super('regress_jobq_mallory') AS mallory_is_superuser;

-- one execution transaction never holds jobs of two owners: the worker
-- commits at each change of owner, so no role's open large objects, row
-- locks, SET CONSTRAINTS or PL/pgSQL expression states (with their
-- privilege checks done) reach another role's job, and no role's job
-- keeps another's effects uncommitted.  Quick jobs of one owner first
-- (they share execution transactions: claims grow to batches), then
-- pairs of a job of mallory's and a superuser's, in turn
CREATE FUNCTION sec_mallory.enq(cmd text) RETURNS bigint SECURITY DEFINER
    LANGUAGE sql AS $$ SELECT jobq.enqueue(cmd) $$;
ALTER FUNCTION sec_mallory.enq(text) OWNER TO regress_jobq_mallory;
DO $$
BEGIN
    FOR i IN 1..127 LOOP
        PERFORM jobq.enqueue($c$SELECT txid_current() AS xid, 'warm-up' AS kind$c$);
    END LOOP;
    FOR i IN 1..20 LOOP
        PERFORM sec_mallory.enq(format($c$SELECT txid_current() AS xid, %s AS pair, 'reads' AS kind$c$, i));
        PERFORM jobq.enqueue(format($c$SELECT txid_current() AS xid, %s AS pair, 'after reads' AS kind$c$, i));
    END LOOP;
    FOR i IN 1..20 LOOP
        PERFORM sec_mallory.enq(format(
            $c$INSERT INTO sec_mallory.effects VALUES ('pair'); SELECT txid_current() AS xid, %s AS pair, 'writes' AS kind$c$, i));
        PERFORM jobq.enqueue(format($c$SELECT txid_current() AS xid, %s AS pair, 'after writes' AS kind$c$, i));
    END LOOP;
END
$$;
SELECT count(*) FILTER (WHERE wait_job(id) = 'succeeded') AS jobs_ran
  FROM jobq.jobs WHERE command LIKE '%txid_current%';
SELECT count(DISTINCT result->'xid') < count(*) AS one_owner_shares_transactions
  FROM jobq.jobs WHERE result->>'kind' = 'warm-up';
SELECT count(*) FILTER (WHERE m.result->'xid' = s.result->'xid') AS pairs_sharing_a_transaction
  FROM jobq.jobs m JOIN jobq.jobs s ON s.result->'pair' = m.result->'pair'
 WHERE (m.result->>'kind', s.result->>'kind') IN (('reads', 'after reads'),
                                                  ('writes', 'after writes'));
DELETE FROM sec_mallory.effects;
-- handing another owner's job back never lets a job of lower priority
-- run first: the superuser's jobs A and C, and mallory's B between them,
-- claimed in one batch, run in priority order
CREATE TABLE sec_order (label text, seq bigserial);
GRANT INSERT ON sec_order TO regress_jobq_mallory;
GRANT USAGE ON SEQUENCE sec_order_seq_seq TO regress_jobq_mallory;
DO $$
BEGIN
    FOR i IN 1..127 LOOP
        PERFORM jobq.enqueue('SELECT 1', priority => 5);
    END LOOP;
    PERFORM jobq.enqueue($c$INSERT INTO public.sec_order (label) VALUES ('A')$c$, priority => 5);
    PERFORM sec_mallory.enq($c$INSERT INTO public.sec_order (label) VALUES ('B')$c$);
    PERFORM jobq.enqueue($c$INSERT INTO public.sec_order (label) VALUES ('C')$c$, priority => -5);
END
$$;
SELECT count(wait_job(id)) FROM jobq.jobs WHERE command LIKE '%sec_order%';
SELECT string_agg(label, ' ' ORDER BY seq) AS run_order FROM sec_order;

-- a job cannot LISTEN: the worker would hold the notification queue
SELECT jobq.enqueue('LISTEN sec_channel', max_attempts => 1) AS j \gset
SELECT wait_job(:j);
SELECT state, last_error, last_sqlstate FROM jobq.jobs WHERE id = :j;

--
-- 2. timeouts and cancels cannot be swallowed
--
-- a job that catches query_canceled runs past its timeout: after
-- jobq.cancel_grace its worker ends it, the attempt fails with 57014 and
-- is retried; its effects are rolled back
SET ROLE regress_jobq_mallory;
SELECT jobq.enqueue($$
    INSERT INTO sec_mallory.effects VALUES ('timeout');
    DO $do$
    BEGIN
        LOOP
            BEGIN
                PERFORM pg_catalog.pg_sleep(0.05);
            EXCEPTION WHEN query_canceled THEN
                NULL;
            END;
        END LOOP;
    END
    $do$
$$, timeout => '500ms', max_attempts => 2) AS j \gset
RESET ROLE;
SELECT wait_job(:j, '120s');
SELECT state, attempts, last_error, last_sqlstate FROM jobq.jobs WHERE id = :j;
SELECT count(*) AS effects FROM sec_mallory.effects;
-- the pool is back
SELECT wait_workers(1);

-- the same job without a timeout, cancelled: jobq.cancel() returns (it
-- waited for its statement timeout before), the job ends cancelled
SET ROLE regress_jobq_mallory;
SELECT jobq.enqueue($$
    INSERT INTO sec_mallory.effects VALUES ('cancel');
    DO $do$
    BEGIN
        LOOP
            BEGIN
                PERFORM pg_catalog.pg_sleep(0.05);
            EXCEPTION WHEN query_canceled OR OTHERS THEN
                NULL;
            END;
        END LOOP;
    END
    $do$
$$, timeout => '0', max_attempts => 3) AS j \gset
RESET ROLE;
-- (inside the loop: a cancel that came earlier would simply cancel it)
SELECT wait_started(:j, in_sleep => true) AS running;
SET statement_timeout = '120s';
SELECT jobq.cancel(:j) AS cancelled;
RESET statement_timeout;
SELECT state, last_sqlstate FROM jobq.jobs WHERE id = :j;
SELECT count(*) AS effects FROM sec_mallory.effects;
SELECT wait_workers(1);

--
-- 3. tasks cannot be hijacked
--
-- a superuser queues a task for later and unregisters the task; mallory
-- registers the name to her own function; the superuser's job refuses it
CREATE FUNCTION sec_maint(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT '"maintenance done"'::jsonb $$;
SELECT jobq.register_task('maint', 'sec_maint(jsonb)');
SELECT (jobq.pause('sec_later')).paused;
SELECT jobq.enqueue_task('maint', '{}', queue => 'sec_later', max_attempts => 1) AS j \gset
SELECT jobq.unregister_task('maint');
SET ROLE regress_jobq_mallory;
CREATE FUNCTION sec_mallory.grab(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    ALTER ROLE regress_jobq_mallory SUPERUSER;
    RETURN '"got it"';
END
$$;
SELECT jobq.register_task('maint', 'sec_mallory.grab(jsonb)');
RESET ROLE;
SELECT (jobq.resume('sec_later')).paused;
SELECT wait_job(:j);
SELECT state, last_error, last_sqlstate FROM jobq.jobs WHERE id = :j;
SELECT is_super('regress_jobq_mallory') AS mallory_is_superuser;

-- membership is trust only when a superuser granted it: not when a role
-- with CREATEROLE (which in PostgreSQL 15 may grant any role that is not
-- a superuser) makes the victim a member of mallory
CREATE ROLE regress_jobq_victim LOGIN;
CREATE ROLE regress_jobq_roleadmin LOGIN CREATEROLE;
GRANT USAGE ON SCHEMA jobq TO regress_jobq_victim;
SET ROLE regress_jobq_mallory;
SELECT jobq.register_task('handy', 'sec_mallory.grab(jsonb)');
GRANT EXECUTE ON FUNCTION sec_mallory.grab(jsonb) TO regress_jobq_victim;
GRANT USAGE ON SCHEMA sec_mallory TO regress_jobq_victim;
RESET ROLE;
SET SESSION AUTHORIZATION regress_jobq_roleadmin;
GRANT regress_jobq_mallory TO regress_jobq_victim;
RESET SESSION AUTHORIZATION;
SELECT pg_has_role('regress_jobq_victim', 'regress_jobq_mallory', 'MEMBER') AS victim_is_member;
SET ROLE regress_jobq_victim;
SELECT jobq.enqueue_task('handy', '{}');
RESET ROLE;
-- a membership a superuser granted is trust
REVOKE regress_jobq_mallory FROM regress_jobq_victim;
GRANT regress_jobq_mallory TO regress_jobq_victim;
SET ROLE regress_jobq_victim;
SELECT jobq.enqueue_task('handy', '{}', run_at => now() + interval '1 hour') > 0 AS trusted;
RESET ROLE;
SELECT count(jobq.cancel(id)) FROM jobq.jobs WHERE task = 'handy';
REVOKE regress_jobq_mallory FROM regress_jobq_victim;
DROP ROLE regress_jobq_roleadmin;

-- a function in a temporary schema cannot be a task
SET ROLE regress_jobq_mallory;
CREATE FUNCTION pg_temp.sec_temp_task(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p $$;
SELECT jobq.register_task('temp_task', 'pg_temp.sec_temp_task(jsonb)');
RESET ROLE;

--
-- 4. jobq.wait() runs in place only the caller's own jobs
--
SET ROLE regress_jobq_mallory;
CREATE FUNCTION sec_mallory.sneaky() RETURNS bigint SECURITY DEFINER LANGUAGE sql AS $$
    SELECT jobq.enqueue($j$DECLARE c CURSOR WITH HOLD FOR SELECT 1; SELECT 1$j$)
$$;
RESET ROLE;
BEGIN;
SELECT sec_mallory.sneaky() AS j \gset
SELECT sec_try(format('SELECT jobq.wait(%s, %L)', :j, '0s'));
ROLLBACK;
-- the caller's own job still runs in place
BEGIN;
SELECT jobq.enqueue('SELECT 42 AS answer') AS j \gset
SELECT state, result FROM jobq.wait(:j);
COMMIT;

--
-- 5. nothing jobq runs resolves through the caller's search_path
--
CREATE SCHEMA sec_evil AUTHORIZATION regress_jobq_mallory;
SET ROLE regress_jobq_mallory;
CREATE FUNCTION sec_evil.spy_text(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'planted operator ran as %', current_user;
    RETURN a OPERATOR(pg_catalog.=) b;
END
$$;
CREATE FUNCTION sec_evil.spy_lt(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'planted operator ran as %', current_user;
    RETURN a OPERATOR(pg_catalog.<) b;
END
$$;
CREATE FUNCTION sec_evil.spy_ne(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'planted operator ran as %', current_user;
    RETURN a OPERATOR(pg_catalog.<>) b;
END
$$;
CREATE FUNCTION sec_evil.spy_cat(a text, b text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'planted operator ran as %', current_user;
    RETURN a OPERATOR(pg_catalog.||) b;
END
$$;
CREATE FUNCTION sec_evil.spy_int8(a bigint, b bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'planted operator ran as %', current_user;
    RETURN a OPERATOR(pg_catalog.=) b;
END
$$;
CREATE FUNCTION sec_evil.spy_oid(a oid, b oid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'planted operator ran as %', current_user;
    RETURN a OPERATOR(pg_catalog.=) b;
END
$$;
CREATE OPERATOR sec_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = sec_evil.spy_text);
CREATE OPERATOR sec_evil.< (LEFTARG = text, RIGHTARG = text, FUNCTION = sec_evil.spy_lt);
CREATE OPERATOR sec_evil.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = sec_evil.spy_ne);
CREATE OPERATOR sec_evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = sec_evil.spy_cat);
CREATE OPERATOR sec_evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = sec_evil.spy_int8);
CREATE OPERATOR sec_evil.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = sec_evil.spy_oid);
CREATE FUNCTION sec_evil.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'planted function ran as %', current_user;
    RETURN pg_catalog.now();
END
$$;
CREATE FUNCTION sec_evil.unnest(a bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'planted function ran as %', current_user;
    RETURN QUERY SELECT pg_catalog.unnest(a);
END
$$;
CREATE FUNCTION sec_evil.length(a text) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'planted function ran as %', current_user;
    RETURN pg_catalog.length(a);
END
$$;
GRANT USAGE ON SCHEMA sec_evil TO PUBLIC;
RESET ROLE;

-- the victim: a superuser's SECURITY DEFINER function without a pinned
-- search_path, which mallory may call
CREATE FUNCTION public.sec_admin_ops(dep bigint) RETURNS text SECURITY DEFINER
LANGUAGE plpgsql AS $$
DECLARE
    j bigint;
    t bigint;
BEGIN
    j := jobq.enqueue('SELECT 1', dedup_key => 'sec-admin', depends_on => ARRAY[dep]);
    t := jobq.enqueue_task('jobq.noop', '{"a": 1}', queue => 'sec_admin_q');
    PERFORM jobq.status(j);
    PERFORM jobq.cancel(j);
    PERFORM jobq.retry(j);
    PERFORM jobq.cancel(j);
    PERFORM jobq.wait(dep, '60s');
    PERFORM jobq.register_task('sec_admin_task', 'jobq.noop(jsonb)');
    PERFORM jobq.unregister_task('sec_admin_task');
    PERFORM jobq.configure_queue('sec_admin_q', concurrency => 2);
    PERFORM jobq.pause('sec_admin_q');
    PERFORM jobq.resume('sec_admin_q');
    PERFORM jobq.configure_role('regress_jobq_mallory', max_pending => NULL);
    PERFORM jobq.noop('{"b": 2}');
    PERFORM jobq.sleep('{"seconds": 0}');
    PERFORM jobq.current_job();
    PERFORM count(*) FROM jobq.running_jobs();
    PERFORM count(*) FROM jobq.worker_info();
    PERFORM count(*) FROM jobq.jobs;
    PERFORM count(*) FROM jobq.workers;
    PERFORM count(*) FROM jobq.queue_stats;
    RETURN 'done';
END
$$;
GRANT EXECUTE ON FUNCTION public.sec_admin_ops(bigint) TO regress_jobq_mallory;
SELECT jobq.enqueue('SELECT 1') AS dep \gset
SELECT wait_job(:dep);

SET ROLE regress_jobq_mallory;
SET search_path = sec_evil, pg_catalog, public;
-- through the wrapper: nothing planted runs (no NOTICE)
SELECT public.sec_admin_ops(:dep);
-- and called directly, with mallory's own planted objects
BEGIN;
SELECT jobq.enqueue('SELECT 1', dedup_key => 'sec-direct') AS j \gset
SELECT jobq.enqueue('SELECT 1', dedup_key => 'sec-direct') AS j2 \gset
COMMIT;
SELECT (jobq.wait(:j, '60s')).state;
SELECT jobq.retry(:j), jobq.cancel(:j);
SELECT jobq.enqueue_task('jobq.noop', '{}', depends_on => ARRAY[:j]) AS t \gset
SELECT (jobq.status(:j)).state;
SELECT (jobq.wait(:t, '60s')).state;
RESET search_path;
SELECT :j = :j2 AS same_job;
RESET ROLE;

ALTER SYSTEM RESET jobq.workers;
ALTER SYSTEM RESET jobq.cancel_grace;
SELECT pg_reload_conf();
SELECT wait_workers(2);

--
-- 6. roles cannot block or probe each other through dedup keys
--
SELECT jobq.enqueue('SELECT 1', queue => 'sec_shared', dedup_key => 'sec-key',
                    run_at => now() + interval '1 hour') AS su_job \gset
SET ROLE regress_jobq_mallory;
-- mallory's key is her own: a job of hers, no error, nothing learnt
SELECT jobq.enqueue('SELECT 1', queue => 'sec_shared', dedup_key => 'sec-key',
                    run_at => now() + interval '1 hour') AS m_job \gset
SELECT jobq.enqueue('SELECT 2', queue => 'sec_shared', dedup_key => 'sec-key') = :m_job AS her_own_job;
RESET ROLE;
SELECT :su_job <> :m_job AS two_jobs;
SELECT jobq.cancel(:su_job), jobq.cancel(:m_job);

--
-- 7. bounds on volume, set by the administrator
--
-- commands are capped like payloads
SELECT jobq.enqueue('SELECT ' || repeat('1', 1024 * 1024));
SET jobq.max_command_size = '2kB';
SELECT jobq.enqueue('SELECT ''' || repeat('x', 2048) || '''');
RESET jobq.max_command_size;
SET ROLE regress_jobq_mallory;
SET jobq.max_command_size = '100MB';
RESET ROLE;
-- limits are the administrator's to set
SET ROLE regress_jobq_mallory;
SELECT jobq.configure_role('regress_jobq_mallory', NULL, NULL);
RESET ROLE;
SELECT jobq.configure_role(NULL, 1, 1);
SELECT jobq.configure_role('regress_jobq_mallory', -1, NULL);
SELECT jobq.configure_role('regress_jobq_mallory', NULL, 65);
SELECT count(*) AS no_limits_yet FROM jobq.role_limits
 WHERE max_pending IS NOT NULL OR max_running IS NOT NULL;
-- at most three unfinished jobs: the fourth enqueue fails and writes nothing
SELECT role, max_pending, max_running FROM jobq.configure_role('regress_jobq_mallory', 3, NULL);
SET ROLE regress_jobq_mallory;
SELECT count(jobq.enqueue('SELECT 1', queue => 'sec_later_m', run_at => now() + interval '1 hour'))
  FROM generate_series(1, 3);
SELECT jobq.enqueue('SELECT 1', queue => 'sec_later_m');
SELECT count(*) AS unfinished FROM jobq.jobs WHERE state = 'pending';
RESET ROLE;
-- a job of hers that would flood the queue fails the same way
SELECT (jobq.configure_role('regress_jobq_mallory', 4, NULL)).max_pending AS raised_to;
SET ROLE regress_jobq_mallory;
SELECT jobq.enqueue($$SELECT count(jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour'))
                        FROM generate_series(1, 20000)$$, max_attempts => 1) AS flood \gset
RESET ROLE;
SELECT wait_job(:flood);
SELECT state, last_sqlstate FROM jobq.jobs WHERE id = :flood;
SELECT count(*) AS unfinished FROM jobq.jobs
 WHERE owner = 'regress_jobq_mallory'::regrole AND state = 'pending';
-- other roles are not limited by hers
SELECT jobq.enqueue('SELECT 1') > 0 AS others_enqueue;
-- nor does jobq.retry() of her cancelled jobs take her past it
SET ROLE regress_jobq_mallory;
SELECT min(id) AS some_job FROM jobq.jobs WHERE state = 'pending' \gset
SELECT jobq.cancel(:some_job);
SELECT count(jobq.enqueue('SELECT 1', queue => 'sec_later_m', run_at => now() + interval '1 hour'))
       AS refilled_to_the_limit_of_4
  FROM generate_series(1, 2);
SELECT jobq.retry(:some_job);
SELECT count(*) AS unfinished FROM jobq.jobs WHERE state = 'pending';
RESET ROLE;
-- at most one of her jobs runs at a time
SELECT count(jobq.cancel(id)) FROM jobq.jobs WHERE owner = 'regress_jobq_mallory'::regrole
   AND state = 'pending';
SELECT role, max_pending, max_running FROM jobq.configure_role('regress_jobq_mallory', NULL, 1);
SET ROLE regress_jobq_mallory;
SELECT jobq.enqueue('SELECT pg_sleep(0.3)') AS r1,
       jobq.enqueue('SELECT pg_sleep(0.3)') AS r2,
       jobq.enqueue('SELECT pg_sleep(0.3)') AS r3 \gset
RESET ROLE;
SELECT wait_job(:r1), wait_job(:r2), wait_job(:r3);
SELECT count(*) AS overlapping_runs
  FROM jobq.jobs a JOIN jobq.jobs b ON a.id < b.id
 WHERE a.id IN (:r1, :r2, :r3) AND b.id IN (:r1, :r2, :r3)
   AND a.started_at < b.finished_at AND b.started_at < a.finished_at;
SELECT (jobq.configure_role('regress_jobq_mallory')).max_running AS lifted;

--
-- 8. role settings cannot switch a job's identity
--
CREATE ROLE regress_jobq_boss SUPERUSER;
SET ROLE regress_jobq_mallory;
ALTER ROLE regress_jobq_mallory SET role = 'regress_jobq_boss';
SELECT jobq.enqueue('ALTER ROLE regress_jobq_mallory SUPERUSER', max_attempts => 1) AS j \gset
RESET ROLE;
SELECT wait_job(:j);
SELECT state, last_error, last_sqlstate FROM jobq.jobs WHERE id = :j;
SELECT is_super('regress_jobq_mallory') AS mallory_is_superuser;
ALTER ROLE regress_jobq_mallory RESET ALL;
DROP ROLE regress_jobq_boss;

--
-- 9. the executors' surface
--
-- an executor role, granted the executors' functions as the README says,
-- and an external task that an administrator allowed it to run
CREATE ROLE regress_jobq_exec1 LOGIN;
CREATE ROLE regress_jobq_exec2 LOGIN;	-- another executor role
CREATE ROLE regress_jobq_mailer2 NOLOGIN;	-- registers the mail task
CREATE ROLE regress_jobq_app2 LOGIN IN ROLE regress_jobq_mailer2;	-- queues mail
GRANT USAGE ON SCHEMA jobq TO regress_jobq_exec1, regress_jobq_exec2, regress_jobq_mailer2,
    regress_jobq_app2;
GRANT EXECUTE ON FUNCTION
    jobq.claim(text[], text[], integer, interval, text, interval, text, integer),
    jobq.heartbeat(bigint, uuid, interval), jobq.complete(bigint, uuid, jsonb),
    jobq.complete(bigint[], uuid[], jsonb[]),
    jobq.fail(bigint, uuid, text, interval), jobq.release(bigint, uuid)
  TO regress_jobq_exec1, regress_jobq_exec2;
-- an error's SQLSTATE, message and detail, numbers left out
CREATE FUNCTION sec_try_detail(cmd text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    EXECUTE cmd;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN regexp_replace(SQLSTATE || ': ' || SQLERRM || ' / ' || d, '-?\d+', 'N', 'g');
END
$$;

-- 9.1 mallory's own external task: no role may run it, so she may not
-- queue it (it would only weigh on the executors' claims), and she may not
-- allow anyone to run it
SET ROLE regress_jobq_mallory;
SELECT jobq.register_task('regress_mal_ext', NULL);
SELECT sec_try($$SELECT jobq.enqueue_task('regress_mal_ext', '{"phish": true}', priority => 1000)$$);
SELECT sec_try($$SELECT jobq.allow_executor('regress_mal_ext', 'regress_jobq_exec1')$$);
RESET ROLE;
-- another executor role's own task: the administrator's executors never
-- run it, whatever they ask for, even as a superuser
SET ROLE regress_jobq_exec2;
SELECT jobq.register_task('regress_mal_ext2', NULL);
SELECT jobq.enqueue_task('regress_mal_ext2', '{"phish": true}', priority => 1000) AS mal \gset
RESET ROLE;
SET ROLE regress_jobq_exec1;
SELECT count(*) AS mallory_jobs_claimed FROM jobq.claim(n => 100);
SELECT count(*) AS mallory_jobs_claimed FROM jobq.claim(tasks => ARRAY['regress_mal_ext2']);
RESET ROLE;
SELECT count(*) AS mallory_jobs_claimed_by_a_superuser FROM jobq.claim(tasks => ARRAY['regress_mal_ext2']);
SELECT state, attempts FROM jobq.jobs WHERE id = :mal;
SELECT jobq.cancel(:mal);
-- another role squats the name a third meant to register
SET ROLE regress_jobq_exec2;
SELECT jobq.register_task('regress_send_mail', NULL);
SELECT jobq.enqueue_task('regress_send_mail', '{"phish": true}') AS squat \gset
RESET ROLE;
SET ROLE regress_jobq_mailer2;
SELECT sec_try($$SELECT jobq.register_task('regress_send_mail', NULL)$$);
RESET ROLE;
-- the administrator's allowance names the registrant it expects: refused
SELECT sec_try($$SELECT jobq.allow_executor('regress_send_mail', 'regress_jobq_exec1',
                                            registrant => 'regress_jobq_mailer2')$$);
SELECT executors FROM jobq.task WHERE task = 'regress_send_mail';
SET ROLE regress_jobq_exec1;
SELECT count(*) AS squatted_jobs_claimed FROM jobq.claim(tasks => ARRAY['regress_send_mail']);
RESET ROLE;
-- the squatted name is removed; the rightful registrant takes it, and its
-- executor runs its jobs, not hers
SELECT jobq.unregister_task('regress_send_mail');
SELECT jobq.cancel(:squat);
SET ROLE regress_jobq_mailer2;
SELECT jobq.register_task('regress_send_mail', NULL);
RESET ROLE;
SELECT jobq.allow_executor('regress_send_mail', 'regress_jobq_exec1',
                           registrant => 'regress_jobq_mailer2');
SET ROLE regress_jobq_app2;
SELECT jobq.enqueue_task('regress_send_mail', '{"to": "ann"}', queue => 'regress_sec_mail') AS mail \gset
RESET ROLE;
-- mallory cannot feed it: she is not a member of its registrant
SET ROLE regress_jobq_mallory;
SELECT sec_try($$SELECT jobq.enqueue_task('regress_send_mail', '{"phish": true}')$$);
RESET ROLE;
-- the other executor role was not allowed
SET ROLE regress_jobq_exec2;
SELECT count(*) AS claimed_by_exec2 FROM jobq.claim(tasks => ARRAY['regress_send_mail']);
RESET ROLE;
SET ROLE regress_jobq_exec1;
CREATE TEMP TABLE sec_claimed AS
    SELECT id, lease_token FROM jobq.claim(n => 100, lease => '10 min');
SELECT (SELECT array_agg(id) FROM sec_claimed) = ARRAY[:mail]::bigint[] AS only_the_allowed_job;
RESET ROLE;
-- a job queued for a task that was then unregistered goes to no role that
-- takes the name afterwards
SET ROLE regress_jobq_mailer2;
SELECT jobq.register_task('regress_inv', NULL);
RESET ROLE;
SELECT jobq.allow_executor('regress_inv', 'regress_jobq_exec1');
SET ROLE regress_jobq_app2;
SELECT jobq.enqueue_task('regress_inv', '{"card": "4111"}', queue => 'regress_sec_inv') AS inv \gset
RESET ROLE;
SELECT jobq.unregister_task('regress_inv');
SET ROLE regress_jobq_exec2;
SELECT jobq.register_task('regress_inv', NULL);
SELECT count(*) AS orphan_claimed FROM jobq.claim(tasks => ARRAY['regress_inv'],
                                                  queues => ARRAY['regress_sec_inv']);
RESET ROLE;
SELECT jobq.cancel(:inv), jobq.unregister_task('regress_inv');
-- an invalid function OID is not "external"
SET ROLE regress_jobq_mallory;
SELECT sec_try($$SELECT jobq.register_task('regress_zero', 0::regprocedure)$$);
RESET ROLE;
SELECT count(*) AS registered FROM jobq.task WHERE task = 'regress_zero';

-- 9.2 a result is bounded like a payload, however it is recorded
SET jobq.max_result_size = '1kB';
SET ROLE regress_jobq_exec1;
SELECT sec_try(format('SELECT jobq.complete(%s, %L, jsonb_build_object(''x'', repeat(''y'', 2000)))',
                      id, lease_token)) FROM sec_claimed;
SELECT sec_try(format('SELECT jobq.complete(ARRAY[%s], ARRAY[%L]::uuid[], ARRAY[jsonb_build_object(''x'', repeat(''y'', 2000))])',
                      id, lease_token)) FROM sec_claimed;
RESET ROLE;
SELECT state FROM jobq.jobs WHERE id = :mail;
RESET jobq.max_result_size;
-- a worker's job whose result is past the limit (1MB by default) fails
SET ROLE regress_jobq_mallory;
SELECT jobq.enqueue($$SELECT repeat('x', 2000000) AS big$$, max_attempts => 1) AS big \gset
RESET ROLE;
SELECT wait_job(:big);
SELECT state, last_sqlstate, regexp_replace(last_error, '\d+', 'N', 'g') AS last_error
  FROM jobq.jobs WHERE id = :big;

-- 9.3 the lease calls say nothing of jobs that are not the caller's: a
-- job of another role, leased or not, finished, or no job at all, get the
-- same answer
SELECT jobq.enqueue('SELECT 1') AS done \gset
SELECT wait_job(:done);
SET ROLE regress_jobq_exec2;
SELECT DISTINCT sec_try_detail(format('SELECT jobq.%s', call)) AS answer
  FROM (VALUES (format('complete(%s, gen_random_uuid())', :mail)),
               (format('complete(%s, gen_random_uuid())', :mal)),
               (format('complete(%s, gen_random_uuid())', :done)),
               ('complete(-1, gen_random_uuid())'),
               (format('fail(%s, gen_random_uuid(), ''x'')', :mail)),
               (format('fail(%s, gen_random_uuid(), ''x'')', :done)),
               (format('release(%s, gen_random_uuid())', :mail)),
               (format('release(%s, gen_random_uuid())', :done)),
               (format('heartbeat(%s, gen_random_uuid())', :mail)),
               (format('heartbeat(%s, gen_random_uuid())', :done)),
               ('heartbeat(-1, gen_random_uuid())')) AS c(call);
RESET ROLE;
-- while the holder of the lease learns what became of its job
SELECT jobq.cancel(:mail);
SET ROLE regress_jobq_exec1;
SELECT jobq.heartbeat(id, lease_token) AS cancelled FROM sec_claimed;
SELECT sec_try_detail(format('SELECT jobq.complete(%s, %L)', id, lease_token)) FROM sec_claimed;
RESET ROLE;

-- 9.4 the executors' registry: an entry is its role's, and no role can
-- push out another's
SET ROLE regress_jobq_exec1;
SELECT count(*) FROM jobq.claim(executor => 'regress-real', executor_host => 'good-host',
                                executor_pid => 4242);
RESET ROLE;
SET ROLE regress_jobq_exec2;
-- the same name, from another role: another entry
SELECT count(*) FROM jobq.claim(executor => 'regress-real', executor_host => 'evil-host',
                                executor_pid => 666);
RESET ROLE;
SELECT role, host, pid FROM jobq.executors WHERE executor = 'regress-real' ORDER BY role::text;
-- two hundred made-up names
SET ROLE regress_jobq_exec2;
SELECT sum((SELECT count(*) FROM jobq.claim(executor => 'regress-fake-' || i))) AS claimed
  FROM generate_series(1, 200) AS i;
RESET ROLE;
SELECT role, host, pid FROM jobq.executors WHERE executor = 'regress-real' ORDER BY role::text;
SELECT count(*) <= current_setting('jobq.max_executors_per_role')::int AS exec2_bounded
  FROM jobq.executors WHERE role = 'regress_jobq_exec2'::regrole;
-- and a role sees its own entries only: their counters say how another
-- role's jobs went
SET ROLE regress_jobq_exec2;
SELECT count(*) AS others_seen FROM jobq.executors WHERE role <> 'regress_jobq_exec2'::regrole;
RESET ROLE;
SELECT jobq.unregister_task('regress_mal_ext'), jobq.unregister_task('regress_mal_ext2'),
       jobq.unregister_task('regress_send_mail');
DROP TABLE sec_claimed;
DROP FUNCTION sec_try_detail(text);
DROP OWNED BY regress_jobq_exec1, regress_jobq_exec2, regress_jobq_mailer2, regress_jobq_app2;
DROP ROLE regress_jobq_exec1, regress_jobq_exec2, regress_jobq_app2, regress_jobq_mailer2;
