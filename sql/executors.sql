--
-- executors: external tasks, jobq.claim() and its lease, heartbeats,
-- outcomes, expiry, and who may do what
--
CREATE ROLE regress_jobq_exec LOGIN;	-- an executor
CREATE ROLE regress_jobq_app LOGIN;		-- enqueues jobs
CREATE ROLE regress_jobq_peek LOGIN IN ROLE pg_monitor;	-- reads every job
CREATE ROLE regress_jobq_mailer NOLOGIN;	-- owns the external task
GRANT USAGE ON SCHEMA jobq TO regress_jobq_exec, regress_jobq_app, regress_jobq_peek,
    regress_jobq_mailer;
-- the task's registrant says who may queue its jobs: its members
GRANT regress_jobq_mailer TO regress_jobq_app;
GRANT EXECUTE ON FUNCTION
    jobq.claim(text[], text[], integer, interval, text, interval, text, integer),
    jobq.heartbeat(bigint, uuid, interval), jobq.complete(bigint, uuid, jsonb),
    jobq.complete(bigint[], uuid[], jsonb[]),
    jobq.fail(bigint, uuid, text, interval), jobq.release(bigint, uuid)
  TO regress_jobq_exec;

-- the names of this test's jobs, since ids depend on what ran before
CREATE TEMP TABLE names (id bigint PRIMARY KEY, name text);
GRANT SELECT, INSERT ON names TO PUBLIC;
CREATE FUNCTION jobs_now() RETURNS TABLE (name text, state jobq.job_state,
    attempts integer, executor text, last_error text, last_sqlstate text,
    result jsonb)
LANGUAGE sql AS $$
    SELECT n.name, j.state, j.attempts, j.executor, j.last_error,
           j.last_sqlstate, j.result
      FROM jobq.jobs j JOIN names n USING (id) ORDER BY n.name
$$;

-- an external task is registered without a function
SET ROLE regress_jobq_mailer;
SELECT jobq.register_task('send_email', NULL);
RESET ROLE;
-- the administrator says which executor roles run it
SELECT jobq.allow_executor('send_email', 'regress_jobq_exec', registrant => 'regress_jobq_mailer');
SELECT jobq.allow_executor('send_email', 'regress_jobq_exec');	-- once is enough
-- bad arguments change nothing
SELECT jobq.allow_executor('no_such_task', 'regress_jobq_exec');
SELECT jobq.allow_executor('jobq.noop', 'regress_jobq_exec');
SELECT jobq.allow_executor(NULL, 'regress_jobq_exec');
SELECT jobq.allow_executor('send_email', NULL);
SELECT jobq.allow_executor('send_email', 0::regrole);
SELECT jobq.allow_executor('send_email', 'regress_jobq_exec', registrant => 0::regrole);
SELECT jobq.disallow_executor('no_such_task', 'regress_jobq_exec');
SELECT jobq.disallow_executor('send_email', 'regress_jobq_app') AS was_allowed;
SELECT task, fn, registered_by, executors FROM jobq.task WHERE task = 'send_email';
-- a role that is not a member of the registrant may not feed its executors
SET ROLE regress_jobq_peek;
SELECT jobq.enqueue_task('send_email', '{"to": "mallory"}');
RESET ROLE;

SET ROLE regress_jobq_app;
INSERT INTO names VALUES
    (jobq.enqueue_task('send_email', '{"to": "ann"}'), 'e1'),
    (jobq.enqueue_task('send_email', '{"to": "bob"}', priority => 5), 'e2'),
    (jobq.enqueue_task('send_email', '{"to": "cy"}', queue => 'regress_mail_slow'), 'e3'),
    (jobq.enqueue_task('send_email', '{"to": "dee"}', run_at => now() + interval '1 hour'), 'e4');
RESET ROLE;
SELECT id AS e1 FROM names WHERE name = 'e1' \gset
SELECT id AS e2 FROM names WHERE name = 'e2' \gset
SELECT id AS e3 FROM names WHERE name = 'e3' \gset

-- the workers never run them: a job of their own, queued after, is done
SELECT jobq.enqueue('SELECT 1') AS sqljob \gset
SELECT wait_job(:sqljob);
SELECT * FROM jobs_now();

-- claiming is a privilege the administrator grants; heartbeats and
-- outcomes too
SET ROLE regress_jobq_app;
SELECT * FROM jobq.claim();
SELECT jobq.complete(:e1, gen_random_uuid());
RESET ROLE;

-- the claim takes the highest priority first, and gives a lease
SET ROLE regress_jobq_exec;
CREATE TEMP TABLE claimed AS
    SELECT * FROM jobq.claim(lease => '10 min', executor => 'regress-exec-a',
                             executor_host => 'host-a', executor_pid => 4242);
SELECT n.name, c.task, c.payload, c.queue, c.priority, c.attempt,
       c.max_attempts, c.owner, c.lease_expires_at > now() + interval '9 min' AS leased
  FROM claimed c JOIN names n USING (id);
SELECT lease_token AS t2 FROM claimed \gset
-- the queues to claim from, and the tasks
SELECT n.name, c.queue FROM jobq.claim(queues => ARRAY['regress_mail_slow'],
                                       executor => 'regress-exec-b') c
  JOIN names n USING (id);
SELECT count(*) FROM jobq.claim(tasks => ARRAY['no_such_task'], n => 10);
-- e1 is left; e4 is not due yet
INSERT INTO claimed
    SELECT * FROM jobq.claim(n => 10, executor => 'regress-exec-a');
SELECT n.name FROM claimed c JOIN names n USING (id) ORDER BY n.name;
SELECT lease_token AS t1 FROM claimed WHERE id = :e1 \gset
SELECT count(*) FROM jobq.claim(n => 10);
RESET ROLE;
SELECT * FROM jobs_now();
-- the lease token is the executor's alone: the job keeps its digest
SELECT count(*) FROM jobq.job WHERE id = :e2 AND lease_token = :'t2';

-- heartbeats extend the lease
SET ROLE regress_jobq_exec;
SELECT jobq.heartbeat(:e2, :'t2', '1 hour');
RESET ROLE;
SELECT lease_expires_at > now() + interval '59 min' AS extended
  FROM jobq.job WHERE id = :e2;
SET ROLE regress_jobq_exec;

-- complete: the job succeeded, with its result
SELECT jobq.complete(:e2, :'t2', '{"sent": true}');
RESET ROLE;
SELECT * FROM jobs_now() WHERE name = 'e2';
SET ROLE regress_jobq_exec;
-- and only once: the lease is gone
SELECT error_of(format('SELECT jobq.complete(%s, %L)', :e2, :'t2'), :e2);
SELECT error_of(format('SELECT jobq.heartbeat(%s, %L)', :e2, :'t2'), :e2);
SELECT error_of(format('SELECT jobq.fail(%s, %L, %L)', :e2, :'t2', 'late'), :e2);
-- a token that is not the lease's
SELECT error_of(format('SELECT jobq.complete(%s, %L)', :e1, gen_random_uuid()), :e1);

-- fail: retried (the attempt was counted by the claim), then claimed again
SELECT jobq.fail(:e1, :'t1', 'smtp is down', retry_in => '0');
RESET ROLE;
SELECT * FROM jobs_now() WHERE name = 'e1';
SET ROLE regress_jobq_exec;
SELECT attempt, lease_token AS t1b FROM jobq.claim(tasks => ARRAY['send_email'],
                                                   executor => 'regress-exec-a') \gset
SELECT :attempt AS second_attempt;
-- the first attempt's token no longer counts
SELECT error_of(format('SELECT jobq.complete(%s, %L)', :e1, :'t1'), :e1);
-- with no attempt left, fail ends the job
RESET ROLE;
SET ROLE regress_jobq_app;
INSERT INTO names VALUES
    (jobq.enqueue_task('send_email', '{"to": "eve"}', max_attempts => 1,
                       queue => 'regress_mail_once'), 'e5');
RESET ROLE;
SELECT id AS e5 FROM names WHERE name = 'e5' \gset
SET ROLE regress_jobq_exec;
SELECT lease_token AS t5 FROM jobq.claim(queues => ARRAY['regress_mail_once'],
                                         executor => 'regress-exec-b') \gset
SELECT jobq.fail(:e5, :'t5', 'no such mailbox');
SELECT jobq.complete(:e1, :'t1b', '{"sent": true}');
RESET ROLE;
SELECT * FROM jobs_now() WHERE name IN ('e1', 'e5');

-- cancel: the job ends cancelled at once; the heartbeat says so, and an
-- outcome no longer counts
SET ROLE regress_jobq_app;
INSERT INTO names VALUES
    (jobq.enqueue_task('send_email', '{"to": "fay"}', queue => 'regress_mail_cancel'), 'e6');
RESET ROLE;
SELECT id AS e6 FROM names WHERE name = 'e6' \gset
SET ROLE regress_jobq_exec;
SELECT lease_token AS t6 FROM jobq.claim(queues => ARRAY['regress_mail_cancel'],
                                         executor => 'regress-exec-b') \gset
RESET ROLE;
SET ROLE regress_jobq_app;
SELECT jobq.cancel(:e6);
RESET ROLE;
SET ROLE regress_jobq_exec;
SELECT jobq.heartbeat(:e6, :'t6');
SELECT error_of(format('SELECT jobq.complete(%s, %L)', :e6, :'t6'), :e6);
RESET ROLE;
SELECT * FROM jobs_now() WHERE name = 'e6';

-- expiry: the workers put the job back within a second of the lease's
-- end, with the attempt counted; a late outcome does not count
SET ROLE regress_jobq_app;
INSERT INTO names VALUES
    (jobq.enqueue_task('send_email', '{"to": "gus"}', max_attempts => 2,
                       queue => 'regress_mail_expiry'), 'e7');
RESET ROLE;
SELECT id AS e7 FROM names WHERE name = 'e7' \gset
SET ROLE regress_jobq_exec;
SELECT lease_token AS t7 FROM jobq.claim(queues => ARRAY['regress_mail_expiry'],
                                         lease => '0.2 s', executor => 'regress-exec-c') \gset
RESET ROLE;
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 s';
BEGIN
    WHILE NOT EXISTS (SELECT 1 FROM jobq.jobs j JOIN names n USING (id)
                       WHERE n.name = 'e7' AND j.state = 'pending') LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'the lease of e7 did not expire';
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
$$;
SELECT * FROM jobs_now() WHERE name = 'e7';
SET ROLE regress_jobq_exec;
SELECT error_of(format('SELECT jobq.complete(%s, %L)', :e7, :'t7'), :e7);
-- the second attempt expires too: none is left, the job fails
SELECT attempt FROM jobq.claim(queues => ARRAY['regress_mail_expiry'],
                               lease => '0.2 s', executor => 'regress-exec-c');
RESET ROLE;
SELECT wait_job(:e7);
SELECT * FROM jobs_now() WHERE name = 'e7';

-- a claim that waits, with nothing to take, returns nothing when the
-- wait is over
SET ROLE regress_jobq_exec;
SELECT count(*) FROM jobq.claim(tasks => ARRAY['no_such_task'], wait => '0.2 s');
-- in a transaction that does not see new commits, it cannot wait
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM jobq.claim(wait => '1 s');
ROLLBACK;

-- the executors, by name, with where they run (as they report it)
RESET ROLE;
SELECT executor, role, host, pid, job_ids, jobs_claimed, jobs_succeeded,
       jobs_failed, leases_expired, last_seen >= first_seen AS seen
  FROM jobq.executors WHERE executor LIKE 'regress-exec-%' ORDER BY executor;

-- paused queues and concurrency limits hold for executors too
SET ROLE regress_jobq_app;
INSERT INTO names VALUES
    (jobq.enqueue_task('send_email', '{"n": 1}', queue => 'regress_mail_limit'), 'l1'),
    (jobq.enqueue_task('send_email', '{"n": 2}', queue => 'regress_mail_limit'), 'l2'),
    (jobq.enqueue_task('send_email', '{"n": 3}', queue => 'regress_mail_limit'), 'l3');
RESET ROLE;
SELECT (jobq.pause('regress_mail_limit')).paused;
SET ROLE regress_jobq_exec;
SELECT count(*) FROM jobq.claim(queues => ARRAY['regress_mail_limit'], n => 10);
RESET ROLE;
SELECT (jobq.resume('regress_mail_limit')).paused;
SELECT concurrency FROM jobq.configure_queue('regress_mail_limit', concurrency => 2);
SET ROLE regress_jobq_exec;
CREATE TEMP TABLE limited AS
    SELECT * FROM jobq.claim(queues => ARRAY['regress_mail_limit'], n => 10);
SELECT count(*) AS claimed_at_limit FROM limited;
SELECT count(*) FROM jobq.claim(queues => ARRAY['regress_mail_limit'], n => 10);
SELECT jobq.complete(id, lease_token) FROM limited LIMIT 1;
SELECT count(*) AS one_more FROM jobq.claim(queues => ARRAY['regress_mail_limit'], n => 10);
RESET ROLE;
SELECT running FROM jobq.queue_stats WHERE queue = 'regress_mail_limit';

-- release: an executor that stops hands a job back unrun, its attempt
-- not counted
SET ROLE regress_jobq_app;
INSERT INTO names VALUES
    (jobq.enqueue_task('send_email', '{"to": "hal"}', queue => 'regress_mail_release'), 'e8');
RESET ROLE;
SELECT id AS e8 FROM names WHERE name = 'e8' \gset
SET ROLE regress_jobq_exec;
SELECT lease_token AS t8 FROM jobq.claim(queues => ARRAY['regress_mail_release'],
                                         executor => 'regress-exec-d') \gset
SELECT jobq.release(:e8, :'t8');
SELECT error_of(format('SELECT jobq.release(%s, %L)', :e8, :'t8'), :e8);
RESET ROLE;
SELECT * FROM jobs_now() WHERE name = 'e8';

-- complete many at once: all or nothing
SET ROLE regress_jobq_app;
INSERT INTO names
    SELECT jobq.enqueue_task('send_email', jsonb_build_object('n', i), queue => 'regress_mail_many'),
           'm' || i
      FROM generate_series(1, 3) AS i;
RESET ROLE;
SET ROLE regress_jobq_exec;
CREATE TEMP TABLE many AS
    SELECT * FROM jobq.claim(queues => ARRAY['regress_mail_many'], n => 3);
SELECT count(*) FROM many;
-- one token that is not the lease's: nothing is completed
SELECT max(id) AS m3 FROM many \gset
SELECT error_of(format('SELECT jobq.complete(%L::bigint[], %L::uuid[])',
                       array_agg(id ORDER BY id),
                       array_agg(CASE WHEN id = :m3 THEN gen_random_uuid() ELSE lease_token END
                                 ORDER BY id)), :m3)
  FROM many;
RESET ROLE;
SELECT count(*) AS still_leased FROM jobq.jobs WHERE id IN (SELECT id FROM many) AND state = 'running';
SET ROLE regress_jobq_exec;
SELECT jobq.complete(ARRAY[1, 1]::bigint[], ARRAY[gen_random_uuid(), gen_random_uuid()]);
SELECT jobq.complete(ARRAY[1]::bigint[], ARRAY[gen_random_uuid(), gen_random_uuid()]);
SELECT jobq.complete(array_agg(id ORDER BY id), array_agg(lease_token ORDER BY id),
                     array_agg(jsonb_build_object('sent', payload->'n') ORDER BY id))
  FROM many;
RESET ROLE;
SELECT * FROM jobs_now() WHERE name LIKE 'm%';

-- an error inside a claim leaves the session usable (the claim's
-- subtransaction is undone): here its statement times out while it waits
SET ROLE regress_jobq_exec;
\set VERBOSITY terse
SET statement_timeout = '50ms';
SELECT count(*) FROM jobq.claim(queues => ARRAY['regress_no_jobs'], wait => '10 s');
SELECT 'still usable' AS session;
BEGIN;
SELECT count(*) FROM jobq.claim(queues => ARRAY['regress_no_jobs'], wait => '10 s');
ROLLBACK;
RESET statement_timeout;
\set VERBOSITY default
SELECT 'still usable' AS session;
RESET ROLE;

-- a transaction that claimed jobs cannot be prepared: its lease must be
-- committed to count
SET ROLE regress_jobq_app;
INSERT INTO names VALUES
    (jobq.enqueue_task('send_email', '{"to": "ike"}', queue => 'regress_mail_prepare'), 'e9');
RESET ROLE;
SET ROLE regress_jobq_exec;
BEGIN;
SELECT count(*) FROM jobq.claim(queues => ARRAY['regress_mail_prepare']);
PREPARE TRANSACTION 'regress_claim';
RESET ROLE;
SELECT * FROM jobs_now() WHERE name = 'e9';

-- bad input: an error with an SQLSTATE, and nothing claimed or changed
SET ROLE regress_jobq_exec;
SELECT * FROM jobq.claim(n => 0);
SELECT * FROM jobq.claim(n => 1001);
SELECT * FROM jobq.claim(n => NULL);
SELECT * FROM jobq.claim(lease => NULL);
SELECT * FROM jobq.claim(lease => '-1 s');
SELECT * FROM jobq.claim(lease => '0');
SELECT * FROM jobq.claim(lease => '1 mon');
SELECT * FROM jobq.claim(wait => NULL);
SELECT * FROM jobq.claim(wait => '-1 s');
SELECT * FROM jobq.claim(tasks => ARRAY[NULL]::text[]);
SELECT * FROM jobq.claim(queues => ARRAY['']);
SELECT * FROM jobq.claim(executor => '');
SELECT * FROM jobq.claim(executor => repeat('x', 64));
SELECT * FROM jobq.claim(executor_host => repeat('h', 64));
SELECT * FROM jobq.claim(executor_pid => 0);
SELECT jobq.heartbeat(1, 'not-a-token');
SELECT jobq.heartbeat(NULL, gen_random_uuid());
SELECT jobq.heartbeat(:e1, NULL);
SELECT jobq.heartbeat(:e1, gen_random_uuid(), '-1 s');
SELECT jobq.complete(-1, gen_random_uuid());
SELECT jobq.fail(:e1, gen_random_uuid(), NULL);
SELECT jobq.fail(:e1, gen_random_uuid(), 'x', retry_in => '-1 s');
RESET ROLE;
SELECT count(*) AS leased FROM jobq.job WHERE lease_token IS NOT NULL
   AND queue NOT IN ('regress_mail_limit');

-- a role may enqueue an external task only if it is a member of its
-- registrant (and trusts it)
CREATE ROLE regress_jobq_squatter LOGIN;
GRANT USAGE ON SCHEMA jobq TO regress_jobq_squatter;
SET ROLE regress_jobq_squatter;
SELECT jobq.register_task('squatted_task', NULL);
RESET ROLE;
SET ROLE regress_jobq_app;
SELECT jobq.enqueue_task('squatted_task', '{}');
RESET ROLE;

-- one transaction: a claim, a heartbeat, the outcome (which sees the
-- heartbeat's new version), a second outcome (the lease is gone), and a
-- payload kept in TOAST comes back whole
SET ROLE regress_jobq_app;
INSERT INTO names VALUES
    (jobq.enqueue_task('send_email',
                       jsonb_build_object('body', (SELECT string_agg(md5(i::text), '')
                                                     FROM generate_series(1, 5000) AS i)),
                       queue => 'regress_mail_tx'), 'e10');
RESET ROLE;
SET ROLE regress_jobq_exec;
BEGIN;
CREATE TEMP TABLE tx_claim AS
    SELECT id, lease_token, length(payload->>'body') AS body_length
      FROM jobq.claim(queues => ARRAY['regress_mail_tx']);
SELECT body_length FROM tx_claim;
SELECT jobq.heartbeat(id, lease_token, '1 hour') AS cancelled FROM tx_claim;
SELECT jobq.complete(id, lease_token, '{"in": "one transaction"}') FROM tx_claim;
SELECT error_of(format('SELECT jobq.complete(%s, %L)', id, lease_token), id) FROM tx_claim;
COMMIT;
RESET ROLE;
SELECT * FROM jobs_now() WHERE name = 'e10';
SELECT length(payload->>'body') AS body_length
  FROM jobq.job_history WHERE id = (SELECT id FROM names WHERE name = 'e10');

-- a job enqueued by the same transaction cannot be waited for
SET ROLE regress_jobq_app;
BEGIN;
SELECT jobq.enqueue_task('send_email', '{}', queue => 'regress_mail_wait') AS w \gset
SELECT error_of(format('SELECT jobq.wait(%s)', :w), :w);
ROLLBACK;
RESET ROLE;

-- clean up: this test's unfinished jobs, then the roles
SELECT jobq.configure_queue('regress_mail_limit', concurrency => NULL) IS NOT NULL AS reset;
SELECT bool_and(jobq.cancel(id)) AS cancelled FROM jobq.job WHERE task = 'send_email';
SELECT jobq.unregister_task('squatted_task');
-- an unregistered external task's jobs are no longer claimed
SET ROLE regress_jobq_mailer;
SELECT jobq.register_task('short_lived', NULL);
RESET ROLE;
SELECT jobq.allow_executor('short_lived', 'regress_jobq_exec');
SET ROLE regress_jobq_app;
SELECT jobq.enqueue_task('short_lived', '{}', queue => 'regress_short') AS sl \gset
RESET ROLE;
SELECT jobq.unregister_task('short_lived');
SET ROLE regress_jobq_exec;
SELECT count(*) FROM jobq.claim(queues => ARRAY['regress_short']);
RESET ROLE;
SELECT jobq.cancel(:sl);
DROP TABLE claimed, limited, many, tx_claim;
DROP OWNED BY regress_jobq_exec, regress_jobq_app, regress_jobq_peek, regress_jobq_squatter,
    regress_jobq_mailer;
