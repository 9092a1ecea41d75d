--
-- depends: a job with depends_on runs once every job it names has
-- succeeded; if one fails or is cancelled, it is cancelled, and so are
-- the jobs that wait for it
--
CREATE TABLE dep_log (step text, at timestamptz DEFAULT clock_timestamp());

-- a three-step workflow, enqueued in one transaction: extract, then
-- transform, then load
BEGIN;
SELECT jobq.enqueue($$INSERT INTO dep_log (step) SELECT 'extract' FROM pg_sleep(0.2)$$) AS extract \gset
SELECT jobq.enqueue($$INSERT INTO dep_log (step) VALUES ('transform')$$,
                    depends_on => ARRAY[:extract]::bigint[]) AS transform \gset
SELECT jobq.enqueue($$INSERT INTO dep_log (step) VALUES ('load') RETURNING step$$,
                    depends_on => ARRAY[:extract, :transform]::bigint[]) AS load \gset
COMMIT;
-- a waiting job is pending, with the run_at it asked for
SELECT state, run_at <= now() AS due_now, depends_on = ARRAY[:extract, :transform]::bigint[] AS deps
  FROM jobq.jobs WHERE id = :load;
SELECT state, result FROM jobq.wait(:load);
SELECT string_agg(step, ' -> ' ORDER BY at) AS ran FROM dep_log;
SELECT count(*) FILTER (WHERE state = 'succeeded') AS succeeded
  FROM jobq.jobs WHERE id IN (:extract, :transform, :load);

-- a job that depends on finished jobs that succeeded runs at once
SELECT jobq.enqueue('SELECT 1', depends_on => ARRAY[:extract]::bigint[]) AS after_done \gset
SELECT state FROM jobq.wait(:after_done);

-- a failure cancels the jobs that wait for it, transitively, with the reason
BEGIN;
SELECT jobq.enqueue('SELECT 1/0', max_attempts => 1) AS bad \gset
SELECT jobq.enqueue('SELECT 2', depends_on => ARRAY[:bad]::bigint[]) AS child \gset
SELECT jobq.enqueue_task('jobq.noop', depends_on => ARRAY[:child]::bigint[]) AS grandchild \gset
COMMIT;
SELECT state FROM jobq.wait(:bad);
SELECT state FROM jobq.wait(:grandchild);
SELECT id = :child AS child, state, attempts,
       last_error = format('job %s, which this job depends on, did not succeed', :bad) AS reason_bad,
       last_error = format('job %s, which this job depends on, did not succeed', :child) AS reason_child
  FROM jobq.jobs WHERE id IN (:child, :grandchild) ORDER BY id;

-- cancelling a job cancels those that wait for it
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour') AS later \gset
SELECT jobq.enqueue('SELECT 2', depends_on => ARRAY[:later]::bigint[]) AS after_later \gset
SELECT jobq.cancel(:later);
SELECT state, last_error = format('job %s, which this job depends on, did not succeed', :later) AS reason
  FROM jobq.wait(:after_later);

-- and a job can be cancelled while it waits
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour') AS later2 \gset
SELECT jobq.enqueue('SELECT 2', depends_on => ARRAY[:later2]::bigint[]) AS waiting \gset
SELECT jobq.cancel(:waiting);
SELECT state FROM jobq.status(:waiting);
SELECT jobq.cancel(:later2);

-- bad depends_on: an error, and nothing enqueued
SELECT count(*) AS jobs_before FROM jobq.jobs \gset
\set VERBOSITY sqlstate
SELECT jobq.enqueue('SELECT 1', depends_on => ARRAY[-42]::bigint[]);
\set VERBOSITY default
SELECT error_of(format('SELECT jobq.enqueue(''SELECT 1'', depends_on => ARRAY[%s]::bigint[])', :bad), :bad);
SELECT error_of(format('SELECT jobq.enqueue(''SELECT 1'', depends_on => ARRAY[%s]::bigint[])', :later), :later);
SELECT jobq.enqueue('SELECT 1', depends_on => ARRAY[NULL]::bigint[]);
SELECT jobq.enqueue('SELECT 1', depends_on => ARRAY[[1]]::bigint[]);
SELECT jobq.enqueue('SELECT 1', depends_on => (SELECT array_agg(i) FROM generate_series(1, 101) i));
SELECT count(*) - :jobs_before AS new_jobs FROM jobq.jobs;
-- an empty list is no dependency
SELECT state FROM jobq.wait(jobq.enqueue('SELECT 1', depends_on => '{}'));

-- the workers' sweep settles a waiting job that no finishing transaction
-- saw (here, one written straight into the table, waiting for a job that
-- had already succeeded)
INSERT INTO jobq.job (queue, run_at, not_before, max_attempts, owner, command, depends_on)
VALUES ('default', 'infinity', now(), 1, current_user::regrole, 'SELECT ''swept'' AS by',
        ARRAY[:extract]::bigint[])
RETURNING id AS swept \gset
SELECT state, result FROM jobq.wait(:swept, '60 s');
