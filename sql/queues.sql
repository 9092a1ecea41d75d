--
-- queues: a queue exists from its first job on (in jobq.queue_stats, for
-- whoever may see its jobs); concurrency limits and pauses, changed at run
-- time and transactionally; jobq.queue_stats
--
SELECT jobq.enqueue('SELECT 1', queue => 'q_first_use', run_at => now() + interval '1 hour') AS later \gset
SELECT queue, concurrency, paused FROM jobq.queue_stats WHERE queue IN ('default', 'q_first_use') ORDER BY queue;
-- an enqueue writes no settings row: only configuring a queue does
SELECT count(*) AS settings_rows FROM jobq.queues WHERE queue = 'q_first_use';
-- configuring a queue that has no job yet creates it
SELECT queue, concurrency, paused FROM jobq.configure_queue('q_configured', concurrency => 3);
SELECT queue, concurrency, paused FROM jobq.configure_queue('q_configured', paused => true);
SELECT queue, concurrency, paused FROM jobq.configure_queue('q_configured', concurrency => 0);
SELECT queue, concurrency, paused FROM jobq.resume('q_configured');
-- bad settings change nothing
SELECT jobq.configure_queue(NULL);
SELECT jobq.configure_queue('');
SELECT jobq.configure_queue(repeat('q', 64));
SELECT jobq.configure_queue('q_configured', concurrency => -1);
SELECT jobq.configure_queue('q_configured', concurrency => 65);
SELECT jobq.pause(NULL);
SELECT queue, concurrency, paused FROM jobq.queues WHERE queue = 'q_configured';
-- settings are the administrator's
CREATE ROLE regress_jobq_queue_user LOGIN;
GRANT USAGE ON SCHEMA jobq TO regress_jobq_queue_user;
SET ROLE regress_jobq_queue_user;
SELECT jobq.pause('q_configured');
SELECT jobq.enqueue('SELECT 1', queue => 'q_of_a_user', run_at => now() + interval '1 hour') > 0 AS enqueued;
SELECT count(*) AS own_queue_seen FROM jobq.queue_stats WHERE queue = 'q_of_a_user';
-- the queues of other roles' jobs are not shown to it
SELECT count(*) AS others_queue_seen FROM jobq.queue_stats WHERE queue = 'q_first_use';
RESET ROLE;
SELECT queue FROM jobq.queue_stats WHERE queue = 'q_of_a_user';
-- a queue used by a transaction that rolls back is gone with it
BEGIN;
SELECT jobq.enqueue('SELECT 1', queue => 'q_rolled_back') > 0 AS enqueued;
ROLLBACK;
SELECT count(*) AS rolled_back FROM jobq.queue_stats WHERE queue = 'q_rolled_back';
SELECT jobq.enqueue('SELECT 1', queue => 'q_rolled_back', run_at => now() + interval '1 hour') > 0 AS enqueued;
SELECT count(*) AS exists_now FROM jobq.queue_stats WHERE queue = 'q_rolled_back';

-- a paused queue's jobs wait; other queues go on
SELECT (jobq.pause('q_paused')).paused;
SELECT jobq.enqueue($$SELECT 'was paused' AS r$$, queue => 'q_paused') AS held \gset
SELECT jobq.enqueue($$SELECT 'other queue' AS r$$, queue => 'q_free') AS free \gset
SELECT state, result FROM jobq.wait(:free);
SELECT state FROM jobq.wait(:held, '200 ms');
SELECT queue, pending, scheduled, running, concurrency, paused
  FROM jobq.queue_stats WHERE queue IN ('q_paused', 'q_free', 'q_first_use') ORDER BY queue;
-- a pause that rolls back never happened; a resume takes effect at commit
BEGIN;
SELECT paused FROM jobq.resume('q_paused');
ROLLBACK;
SELECT state FROM jobq.wait(:held, '200 ms');
SELECT paused FROM jobq.resume('q_paused');
SELECT state, result FROM jobq.wait(:held);

-- concurrency: at most that many jobs of the queue run at once across
-- the pool, while the other worker runs another queue's jobs; every job
-- records when it ran
CREATE TABLE q_runs (queue text, job bigint, started timestamptz, finished timestamptz);
SELECT concurrency FROM jobq.configure_queue('q_one', concurrency => 1);
SELECT count(jobq.enqueue(format($$INSERT INTO q_runs
                                   SELECT %L, jobq.current_job(), clock_timestamp();
                                   SELECT pg_sleep(0.2);
                                   UPDATE q_runs SET finished = clock_timestamp()
                                    WHERE job = jobq.current_job()$$, q), queue => q))
  FROM generate_series(1, 4), unnest(ARRAY['q_one', 'q_busy']) AS q;
SELECT count(*) AS finished FROM (
    SELECT jobq.wait(id) FROM jobq.jobs WHERE queue IN ('q_one', 'q_busy')) w;
SELECT queue, count(*) AS ran FROM q_runs GROUP BY queue ORDER BY queue;
-- no two jobs of q_one overlapped
SELECT count(*) AS overlapping_pairs
  FROM q_runs a JOIN q_runs b
    ON a.queue = 'q_one' AND b.queue = 'q_one' AND a.job < b.job
   AND a.started < b.finished AND b.started < a.finished;
SELECT queue, pending, running, succeeded_1m, succeeded_1h, failed_1h, concurrency
  FROM jobq.queue_stats WHERE queue = 'q_one';

DROP OWNED BY regress_jobq_queue_user;
DROP ROLE regress_jobq_queue_user;
