# Copyright: jobq authors
#
# 004_fast_shutdown.pl: a fast shutdown interrupts a running job instead of
# waiting for it, rolls its effects back and hands it back uncounted.
#
# A job inserts into "done" and then sleeps 60 s (unless a flag is set).
# While it sleeps, $node->stop('fast') must complete; it would not before
# the sleep ends if the worker ignored SIGTERM (pg_ctl is given 45 s, less
# than the sleep).  The node then restarts with jobq.workers = 0 so that the
# job's state can be read before anything runs it again: it must be
# pending, with the interrupted attempt not counted (attempts = 0) and the
# interruption recorded as its last error (SQLSTATE 57P01, admin_shutdown:
# an interrupted job is put back after a delay, see finish.c), and "done"
# must be empty.  Then the flag is set, the workers are started (reload),
# and the job runs again, quickly (a single interruption delays it by
# jobq.retry_delay only), and succeeds with attempts = 1; "done" holds its
# effect exactly once.
# Last, a job that catches the cancel does not stop the shutdown either.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $node = new_jobq_node('main');
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
$node->safe_psql('postgres',
	'CREATE TABLE done (job_id bigint); CREATE TABLE flag (k text)');

my $id = $node->safe_psql(
	'postgres', q{
	SELECT jobq.enqueue($job$INSERT INTO done VALUES (1); SELECT pg_sleep(CASE WHEN EXISTS (SELECT FROM flag) THEN 0 ELSE 60 END)$job$,
	                    max_attempts => 3)});

# The job is running and its worker is inside pg_sleep, after the INSERT.
ok(wait_for_job_sleeping($node, $id, 1),
	'job is running, sleeping after its insert');

# Nothing runs the job after the next start until the test says so.
$node->append_conf('postgresql.conf', "jobq.workers = 0\n");

my $stopped;
{
	local $ENV{PGCTLTIMEOUT} = 45;
	$stopped = $node->stop('fast', fail_ok => 1);
}
ok($stopped, 'fast shutdown completes while a job sleeps');
unless ($stopped)
{
	# the postmaster is still waiting for the worker: put an end to it
	$node->stop('immediate', fail_ok => 1);
}

$node->start;
is(count_backends($node, 'jobq worker'),
	'0', 'no jobq worker with jobq.workers = 0');

is( $node->safe_psql(
		'postgres',
		"SELECT state, attempts, last_sqlstate, worker_pid IS NULL FROM jobq.status($id)"
	),
	'pending|0|57P01|t',
	'interrupted job is pending again, attempt not counted, the interruption recorded');
is($node->safe_psql('postgres', 'SELECT count(*) FROM done'),
	'0', 'effect of the interrupted job rolled back');

# Let the job run again, quickly this time.
$node->safe_psql('postgres', 'INSERT INTO flag VALUES (1)');
$node->append_conf('postgresql.conf', "jobq.workers = 2\n");
$node->reload;

ok(wait_for_job($node, $id),
	'job ran again after the restart and succeeded');
is($node->safe_psql('postgres', "SELECT attempts FROM jobq.status($id)"),
	'1', 'only the completed attempt is counted');
is($node->safe_psql('postgres', 'SELECT count(*) FROM done'),
	'1', 'effect of the job is in done exactly once');

# A job that swallows the cancel (a plpgsql loop catching query_canceled)
# must not hold the shutdown hostage: after a grace period its worker is
# terminated, and the job, recovered with that attempt counted, fails for
# good here since it has no attempt left.
my $stubborn = $node->safe_psql(
	'postgres', q{
	SELECT jobq.enqueue($job$DO $do$
	    BEGIN
	        LOOP
	            BEGIN
	                PERFORM pg_sleep(0.2);
	            EXCEPTION WHEN query_canceled THEN
	                NULL;
	            END;
	        END LOOP;
	    END $do$$job$, max_attempts => 1)});
# inside its loop (in pg_sleep), not merely started: a shutdown that came
# before the loop's exception handler would end the job like any other
wait_for_job_sleeping($node, $stubborn, 1)
  or die "the stubborn job never reached its loop";
{
	local $ENV{PGCTLTIMEOUT} = 45;
	$stopped = $node->stop('fast', fail_ok => 1);
}
ok($stopped, 'fast shutdown completes while a job ignores cancellation');
$node->stop('immediate', fail_ok => 1) unless $stopped;
$node->start;
ok(wait_for_job($node, $stubborn, 'failed'),
	'the job that ignored cancellation is recovered and, without attempts left, failed');

$node->stop;
done_testing();
