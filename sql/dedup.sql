--
-- dedup: while an unfinished job of a queue has a key, enqueueing with
-- that key in that queue returns the first job's id and adds nothing
--
SELECT jobq.enqueue('SELECT 1', run_at => now() + interval '1 hour', dedup_key => 'nightly') AS first \gset
SELECT jobq.enqueue('SELECT 2', dedup_key => 'nightly') = :first AS same_job,
       jobq.enqueue_task('jobq.noop', dedup_key => 'nightly') = :first AS same_for_a_task;
SELECT jobq.enqueue('SELECT 3', queue => 'other', run_at => now() + interval '1 hour',
                    dedup_key => 'nightly') <> :first AS other_queue_other_job;
SELECT queue, command, dedup_key FROM jobq.jobs WHERE dedup_key = 'nightly' ORDER BY id;
-- twice in one transaction: one job
BEGIN;
SELECT jobq.enqueue('SELECT 4', run_at => now() + interval '1 hour', dedup_key => 'tx') AS a \gset
SELECT jobq.enqueue('SELECT 5', dedup_key => 'tx') = :a AS same_in_transaction;
ROLLBACK;
SELECT count(*) AS rolled_back FROM jobq.jobs WHERE dedup_key = 'tx';
-- once the job has finished, the key is free again
SELECT jobq.enqueue('SELECT ''first'' AS run', dedup_key => 'once') AS once \gset
SELECT state, result FROM jobq.wait(:once);
SELECT jobq.enqueue('SELECT ''second'' AS run', dedup_key => 'once') <> :once AS new_job;
-- a cancelled job frees its key; retrying it while its key is taken is an error
SELECT jobq.cancel(:first);
SELECT jobq.enqueue('SELECT 6', run_at => now() + interval '1 hour', dedup_key => 'nightly') AS taken \gset
\set VERBOSITY sqlstate
SELECT jobq.retry(:first) AS retry_with_key_taken;
\set VERBOSITY default
SELECT jobq.cancel(:taken);
SELECT jobq.retry(:first);
SELECT state, dedup_key FROM jobq.wait(:first);
-- bad keys
SELECT jobq.enqueue('SELECT 1', dedup_key => '');
SELECT jobq.enqueue('SELECT 1', dedup_key => repeat('k', 1025));
