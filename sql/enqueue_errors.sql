--
-- enqueue_errors: every bad argument is rejected with an error and
-- enqueues nothing
--
SELECT jobq.enqueue(NULL);
SELECT jobq.enqueue('');
SELECT jobq.enqueue(E'  \n\t');
SELECT jobq.enqueue('SELECT 1', max_attempts => 0);
SELECT jobq.enqueue('SELECT 1', max_attempts => -1);
SELECT jobq.enqueue('SELECT 1', max_attempts => 1001);
SELECT jobq.enqueue('SELECT 1', timeout => '-1 second');
SELECT jobq.enqueue('SELECT 1', timeout => '1 day -1 second');
SELECT jobq.enqueue('SELECT 1', priority => 1001);
SELECT jobq.enqueue('SELECT 1', priority => -1001);
SELECT jobq.enqueue('SELECT 1', priority => NULL);
SELECT jobq.enqueue('SELECT 1', queue => '');
SELECT jobq.enqueue('SELECT 1', queue => repeat('q', 64));
SELECT jobq.enqueue('SELECT 1', queue => NULL);
SELECT jobq.enqueue('SELECT 1', run_at => NULL);
SELECT jobq.enqueue('SELECT 1', run_at => 'infinity');
SELECT jobq.enqueue('SELECT 1', run_at => '-infinity');

-- nothing was enqueued
SELECT count(*) FROM jobq.jobs;

-- the boundaries themselves are accepted
BEGIN;
SELECT jobq.enqueue('SELECT 1', priority => 1000, max_attempts => 1000,
                    queue => repeat('q', 63), timeout => '0') > 0 AS ok;
SELECT jobq.enqueue('SELECT 1', priority => -1000, max_attempts => 1) > 0 AS ok;
SELECT queue = repeat('q', 63) AS long_queue, priority, max_attempts
  FROM jobq.jobs ORDER BY id;
ROLLBACK;

-- defaults come from the settings, taken at enqueue time
BEGIN;
SET LOCAL jobq.default_max_attempts = 7;
SET LOCAL jobq.default_timeout = '1min';
SELECT jobq.enqueue('SELECT 1') > 0 AS ok;
SELECT queue, priority, max_attempts, state, attempts FROM jobq.jobs;
SELECT timeout FROM jobq.job;
ROLLBACK;

-- settings reject bad values instead of clamping them
SET jobq.default_max_attempts = 0;
SET jobq.default_max_attempts = 1001;
SET jobq.default_timeout = -1;
SET jobq.workers = 3;
SET jobq.database = 'other';
SET jobq.no_such_setting = 1;
SHOW jobq.default_max_attempts;

-- a read-only transaction cannot enqueue
BEGIN READ ONLY;
SELECT jobq.enqueue('SELECT 1');
ROLLBACK;

-- enqueue writes the table's indexes itself: one created or a column
-- added after the first enqueue of a session is written too
BEGIN;
SELECT jobq.enqueue('SELECT 1', queue => 'regress_idx_a') > 0 AS ok;
CREATE INDEX regress_job_queue_idx ON jobq.job (queue);
ALTER TABLE jobq.job ADD COLUMN regress_extra integer;
SELECT jobq.enqueue('SELECT 2', queue => 'regress_idx_b') > 0 AS ok;
ALTER TABLE jobq.job DROP COLUMN regress_extra;
SELECT jobq.enqueue('SELECT 3', queue => 'regress_idx_b') > 0 AS ok;
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT command FROM jobq.job WHERE queue = 'regress_idx_b';
SELECT command FROM jobq.job WHERE queue = 'regress_idx_a';
SELECT command FROM jobq.job WHERE queue = 'regress_idx_b' ORDER BY command;
-- and the claim index, through which workers find jobs
EXPLAIN (COSTS OFF) SELECT id FROM jobq.job WHERE NOT external ORDER BY priority DESC, run_at, id;
SELECT count(*) FROM (SELECT id FROM jobq.job
                       WHERE queue LIKE 'regress_idx_%' ORDER BY priority DESC, run_at, id) s;
ROLLBACK;

-- status of a job that does not exist
SELECT jobq.status(-1);
SELECT jobq.status(NULL) IS NULL AS null_status;

-- jobs can only be enqueued where the workers run them
CREATE DATABASE regress_jobq_elsewhere;
\c regress_jobq_elsewhere
CREATE EXTENSION jobq;
SELECT jobq.enqueue('SELECT 1');
\c contrib_regression
DROP DATABASE regress_jobq_elsewhere;

-- the size settings go up to 512MB, as documented, and no further
SET jobq.max_payload_size = '512MB';
SET jobq.max_command_size = '512MB';
SET jobq.max_result_size = '512MB';
SHOW jobq.max_result_size;
SET jobq.max_result_size = '513MB';
RESET jobq.max_payload_size;
RESET jobq.max_command_size;
RESET jobq.max_result_size;
