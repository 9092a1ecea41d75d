-- pgTAP: row-level security.  A role sees only its own jobs, queued or
-- finished, in jobq.jobs, jobq.job, jobq.job_history and through
-- jobq.status(); superusers and members of pg_monitor see all.
--
-- The roles are created inside the transaction and rolled back with it,
-- and so are the jobs: enqueued jobs run only after commit, and the
-- finished jobs inserted below as fixtures never existed for anyone else.
BEGIN;
SELECT plan(40);

SET LOCAL search_path = public;

CREATE ROLE jobq_tap_alice LOGIN;
CREATE ROLE jobq_tap_bob LOGIN;
CREATE ROLE jobq_tap_monitor LOGIN IN ROLE pg_monitor;
-- names that are not plain lower-case identifiers
CREATE ROLE "JOBQ_TAP_ALICE" LOGIN;
CREATE ROLE "jobq tap carol" LOGIN;
GRANT USAGE ON SCHEMA jobq
   TO jobq_tap_alice, jobq_tap_bob, jobq_tap_monitor, "JOBQ_TAP_ALICE", "jobq tap carol";

-- who enqueued what: 'alice' queued, 'alice/done' finished, ...
CREATE TEMP TABLE tap_ids (who text PRIMARY KEY, id bigint NOT NULL);
GRANT ALL ON tap_ids TO PUBLIC;

-- a finished job of each role (written as the superuser: a fixture)
INSERT INTO jobq.job_history (id, queue, state, priority, run_at, attempts,
                              max_attempts, owner, command, created_at,
                              started_at, finished_at, result)
SELECT nextval('jobq.job_id_seq'), 'default', 'succeeded', 0, now(), 1, 1,
       r::regrole, 'SELECT 1 AS done', now(), now(), now(), '{"done": 1}'
  FROM unnest(ARRAY['jobq_tap_alice', 'jobq_tap_bob']) AS r;
INSERT INTO tap_ids
SELECT CASE owner::text WHEN 'jobq_tap_alice' THEN 'alice/done' ELSE 'bob/done' END, id
  FROM jobq.job_history
 WHERE owner::text IN ('jobq_tap_alice', 'jobq_tap_bob');

-- each role enqueues a job as itself
SET ROLE jobq_tap_alice;
INSERT INTO tap_ids SELECT 'alice', jobq.enqueue('SELECT ''alice''');
RESET ROLE;
SET ROLE jobq_tap_bob;
INSERT INTO tap_ids SELECT 'bob', jobq.enqueue('SELECT ''bob''');
RESET ROLE;
SET ROLE "JOBQ_TAP_ALICE";
INSERT INTO tap_ids SELECT 'ALICE', jobq.enqueue('SELECT ''ALICE''');
RESET ROLE;
SET ROLE "jobq tap carol";
INSERT INTO tap_ids SELECT 'carol', jobq.enqueue('SELECT ''carol''');
RESET ROLE;

SELECT is((SELECT count(*)::int FROM tap_ids), 6,
    'fixture: four queued and two finished jobs');
SELECT results_eq(
    $$SELECT owner::text FROM jobq.jobs
       WHERE id IN (SELECT id FROM tap_ids WHERE who IN ('alice', 'bob', 'ALICE', 'carol'))
       ORDER BY id$$,
    $$VALUES ('jobq_tap_alice'), ('jobq_tap_bob'), ('"JOBQ_TAP_ALICE"'), ('"jobq tap carol"')$$,
    'fixture: each queued job is owned by the role that enqueued it');

/*
 * alice
 */
SET ROLE jobq_tap_alice;

SELECT results_eq(
    'SELECT id FROM jobq.jobs ORDER BY id',
    $$SELECT id FROM tap_ids WHERE who IN ('alice', 'alice/done') ORDER BY id$$,
    'alice sees exactly her queued and her finished job in jobq.jobs');
SELECT results_eq(
    'SELECT id FROM jobq.job',
    $$SELECT id FROM tap_ids WHERE who = 'alice'$$,
    'alice sees only her job in jobq.job');
SELECT results_eq(
    'SELECT id FROM jobq.job_history',
    $$SELECT id FROM tap_ids WHERE who = 'alice/done'$$,
    'alice sees only her job in jobq.job_history');
SELECT is(
    (jobq.status((SELECT id FROM tap_ids WHERE who = 'alice'))).command,
    'SELECT ''alice''',
    'jobq.status() shows alice her queued job');
SELECT results_eq(
    $$SELECT state::text, result FROM jobq.status((SELECT id FROM tap_ids WHERE who = 'alice/done'))$$,
    $$VALUES ('succeeded', '{"done": 1}'::jsonb)$$,
    'jobq.status() shows alice her finished job');
SELECT throws_ok(
    format('SELECT jobq.status(%s)', (SELECT id FROM tap_ids WHERE who = 'bob')),
    '42704', NULL, 'jobq.status() of bob''s queued job raises undefined_object for alice');
SELECT throws_ok(
    format('SELECT jobq.status(%s)', (SELECT id FROM tap_ids WHERE who = 'bob/done')),
    '42704', NULL, 'jobq.status() of bob''s finished job raises undefined_object for alice');
SELECT throws_ok(
    format('SELECT jobq.status(%s)', (SELECT id FROM tap_ids WHERE who = 'bob')),
    '42704', format('job %s does not exist', (SELECT id FROM tap_ids WHERE who = 'bob')),
    'the error does not tell alice that bob''s job exists');
SELECT is_empty(
    $$SELECT id FROM jobq.jobs WHERE id IN (SELECT id FROM tap_ids WHERE who IN ('bob', 'bob/done'))$$,
    'alice cannot see bob''s jobs even by id');

RESET ROLE;

/*
 * bob
 */
SET ROLE jobq_tap_bob;

SELECT results_eq(
    'SELECT id FROM jobq.jobs ORDER BY id',
    $$SELECT id FROM tap_ids WHERE who IN ('bob', 'bob/done') ORDER BY id$$,
    'bob sees exactly his queued and his finished job in jobq.jobs');
SELECT results_eq(
    'SELECT id FROM jobq.job',
    $$SELECT id FROM tap_ids WHERE who = 'bob'$$,
    'bob sees only his job in jobq.job');
SELECT results_eq(
    'SELECT id FROM jobq.job_history',
    $$SELECT id FROM tap_ids WHERE who = 'bob/done'$$,
    'bob sees only his job in jobq.job_history');
SELECT is(
    (jobq.status((SELECT id FROM tap_ids WHERE who = 'bob'))).command,
    'SELECT ''bob''',
    'jobq.status() shows bob his queued job');
SELECT throws_ok(
    format('SELECT jobq.status(%s)', (SELECT id FROM tap_ids WHERE who = 'alice')),
    '42704', NULL, 'jobq.status() of alice''s queued job raises undefined_object for bob');
SELECT throws_ok(
    format('SELECT jobq.status(%s)', (SELECT id FROM tap_ids WHERE who = 'alice/done')),
    '42704', NULL, 'jobq.status() of alice''s finished job raises undefined_object for bob');

RESET ROLE;

/*
 * Role names that need quoting: the owner is compared as a role, not
 * re-parsed from its name
 */
SET ROLE "JOBQ_TAP_ALICE";

SELECT results_eq(
    'SELECT id FROM jobq.jobs ORDER BY id',
    $$SELECT id FROM tap_ids WHERE who = 'ALICE'$$,
    'role "JOBQ_TAP_ALICE" sees exactly its own job in jobq.jobs');
SELECT is_empty(
    $$SELECT id FROM jobq.jobs WHERE id IN (SELECT id FROM tap_ids WHERE who IN ('alice', 'alice/done'))$$,
    'role "JOBQ_TAP_ALICE" does not see the jobs of role jobq_tap_alice');
SELECT lives_ok(
    format('SELECT jobq.status(%s)', (SELECT id FROM tap_ids WHERE who = 'ALICE')),
    'jobq.status() shows role "JOBQ_TAP_ALICE" its own job');
SELECT throws_ok(
    format('SELECT jobq.status(%s)', (SELECT id FROM tap_ids WHERE who = 'alice')),
    '42704', NULL, 'jobq.status() of jobq_tap_alice''s job raises undefined_object for "JOBQ_TAP_ALICE"');

RESET ROLE;
SET ROLE jobq_tap_alice;

SELECT is_empty(
    $$SELECT id FROM jobq.jobs WHERE id = (SELECT id FROM tap_ids WHERE who = 'ALICE')$$,
    'jobq_tap_alice does not see the job of role "JOBQ_TAP_ALICE"');

RESET ROLE;
SET ROLE "jobq tap carol";

SELECT lives_ok('SELECT count(*) FROM jobq.jobs',
    'role "jobq tap carol" can read jobq.jobs');
SELECT lives_ok('SELECT count(*) FROM jobq.job',
    'role "jobq tap carol" can read jobq.job');
SELECT lives_ok('SELECT count(*) FROM jobq.job_history',
    'role "jobq tap carol" can read jobq.job_history');
SELECT lives_ok(
    format('SELECT jobq.status(%s)', (SELECT id FROM tap_ids WHERE who = 'carol')),
    'jobq.status() shows role "jobq tap carol" its own job');

RESET ROLE;

/*
 * A member of pg_monitor sees every job but writes none
 */
SET ROLE jobq_tap_monitor;

SELECT set_eq(
    $$SELECT id FROM jobq.jobs WHERE id IN (SELECT id FROM tap_ids)$$,
    'SELECT id FROM tap_ids',
    'a member of pg_monitor sees everyone''s jobs in jobq.jobs');
SELECT set_eq(
    $$SELECT id FROM jobq.job WHERE id IN (SELECT id FROM tap_ids)$$,
    $$SELECT id FROM tap_ids WHERE who NOT LIKE '%/done'$$,
    'a member of pg_monitor sees everyone''s queued jobs in jobq.job');
SELECT set_eq(
    $$SELECT id FROM jobq.job_history WHERE id IN (SELECT id FROM tap_ids)$$,
    $$SELECT id FROM tap_ids WHERE who LIKE '%/done'$$,
    'a member of pg_monitor sees everyone''s finished jobs in jobq.job_history');
SELECT is(
    (jobq.status((SELECT id FROM tap_ids WHERE who = 'alice'))).owner::text,
    'jobq_tap_alice',
    'jobq.status() shows alice''s job to a member of pg_monitor');
SELECT is(
    (jobq.status((SELECT id FROM tap_ids WHERE who = 'bob/done'))).owner::text,
    'jobq_tap_bob',
    'jobq.status() shows bob''s finished job to a member of pg_monitor');
SELECT is(
    (SELECT count(*)::int FROM jobq.jobs WHERE owner::oid <> to_regrole('jobq_tap_monitor')::oid
        AND id IN (SELECT id FROM tap_ids)),
    6,
    'none of the jobs a member of pg_monitor sees are its own');
SELECT throws_ok('DELETE FROM jobq.job',
    '42501', NULL, 'a member of pg_monitor cannot DELETE FROM jobq.job');
SELECT throws_ok('UPDATE jobq.job_history SET result = NULL',
    '42501', NULL, 'a member of pg_monitor cannot UPDATE jobq.job_history');

RESET ROLE;

-- membership of pg_monitor is what counts: without it, the same role is blind
REVOKE pg_monitor FROM jobq_tap_monitor;
SET ROLE jobq_tap_monitor;
SELECT is_empty('SELECT id FROM jobq.jobs',
    'once out of pg_monitor, the role sees no job (it has none)');
RESET ROLE;

/*
 * A role in no way privileged, enqueueing nothing, sees nothing
 */
CREATE ROLE jobq_tap_nobody LOGIN;
GRANT USAGE ON SCHEMA jobq TO jobq_tap_nobody;
SET ROLE jobq_tap_nobody;
SELECT is_empty('SELECT id FROM jobq.jobs', 'a role with no job sees no job in jobq.jobs');
SELECT is_empty('SELECT id FROM jobq.job', 'a role with no job sees no row of jobq.job');
SELECT is_empty('SELECT id FROM jobq.job_history', 'a role with no job sees no row of jobq.job_history');
RESET ROLE;

/*
 * The superuser sees all
 */
SELECT set_eq(
    $$SELECT id FROM jobq.jobs WHERE id IN (SELECT id FROM tap_ids)$$,
    'SELECT id FROM tap_ids',
    'the superuser sees everyone''s jobs in jobq.jobs');
SELECT lives_ok(
    format('SELECT jobq.status(%s)', (SELECT id FROM tap_ids WHERE who = 'carol')),
    'jobq.status() shows any job to the superuser');

SELECT * FROM finish();
ROLLBACK;
