# Copyright: jobq authors
#
# 002_worker_death.pl: what happens to a job when the worker running it dies.
#
# (a) pg_terminate_backend() of a worker in the middle of a job: the worker
#     is replaced (a new jobq worker pid, the pool back at jobq.workers),
#     the interrupted job goes back to pending and runs again, its effect
#     is in "done" exactly once, and the interrupted attempt is not counted
#     (SIGTERM interrupts the job, it is not the job's failure): attempts =
#     1, and the interruption is recorded (last_sqlstate 57P01, admin_shutdown;
#     the job was put back after a delay, see finish.c).
# (b) kill -9 of a worker in the middle of a job: the postmaster
#     crash-restarts, the job is pending again and the journal has its attempt
#     counted (attempts = 2 once it has succeeded), its effect is in "done"
#     exactly once.
# (c) a job that "crashes the server every time" (the test kill -9's the
#     worker whenever it runs the job) with max_attempts => 2 ends 'failed'
#     after two crashes, with last_error saying that the worker exited, and
#     never runs a third time.
#
# Each job announces every run with RAISE LOG, so the server log counts the
# runs, whether they committed or not.  The message is built from a format
# argument, so the job's command text (which the postmaster logs when the
# worker crashes) never matches the pattern.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $node = new_jobq_node('main', conf => "restart_after_crash = on\n");
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
$node->safe_psql('postgres',
	'CREATE TABLE done (job_id bigint); CREATE TABLE flag (k text)');

# The job for scenario $tag: log the run, insert its tag into done, then
# sleep 30 s unless the flag for the tag is set.
sub job_command
{
	my ($tag) = @_;
	return
	    qq{DO \$\$BEGIN RAISE LOG 'jobq-test run of job %', '$tag'; END\$\$; }
	  . qq{INSERT INTO done VALUES ($tag); }
	  . qq{SELECT pg_sleep(CASE WHEN EXISTS (SELECT FROM flag WHERE k = '$tag') THEN 0 ELSE 30 END)};
}

sub enqueue
{
	my ($tag, $extra) = @_;
	$extra = defined $extra ? ", $extra" : '';
	return $node->safe_psql('postgres',
		"SELECT jobq.enqueue(\$job\$" . job_command($tag) . "\$job\$$extra)");
}

# Number of runs of job $tag that the server log has seen.
sub runs_logged
{
	my ($tag) = @_;
	my $log = slurp_file($node->logfile);
	my @runs = ($log =~ /jobq-test run of job $tag\b/g);
	return scalar @runs;
}

# Wait until job $id is running with $attempts attempts and its worker is
# inside pg_sleep (so the INSERT has been done); return the worker's pid.
sub wait_until_sleeping
{
	my ($id, $attempts) = @_;
	wait_for_job_sleeping($node, $id, $attempts)
	  or die "job $id never reached pg_sleep in attempt $attempts";
	return $node->safe_psql('postgres',
		"SELECT worker_pid FROM jobq.status($id)");
}

# Wait for a crash restart logged after $offset, then for the server to
# accept connections again.
sub wait_for_crash_restart
{
	my ($offset) = @_;
	$node->wait_for_log(qr/all server processes terminated; reinitializing/,
		$offset);
	$node->poll_query_until('postgres', 'SELECT true')
	  or die "server did not come back after the crash";
}

# Wait for the full pool.
wait_for_backends($node, 'jobq worker', 2)
  or die "jobq workers did not start";

###########################################################################
# (a) pg_terminate_backend() of a worker in the middle of a job
###########################################################################
{
	my $id = enqueue(1);
	my $pid = wait_until_sleeping($id, 1);
	my @before = worker_pids($node);
	is(scalar @before, 2, 'two jobq workers before the termination');

	# the next run must be fast
	$node->safe_psql('postgres', "INSERT INTO flag VALUES ('1')");

	is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)"),
		't', 'worker running the job terminated');

	# the pool is back at jobq.workers, with a new process in place of the
	# terminated one
	ok( $node->poll_query_until(
			'postgres', qq{
		SELECT count(*) = 2 AND count(*) FILTER (WHERE pid = $pid) = 0
		       AND string_agg(application_name, ',' ORDER BY application_name)
		           = 'jobq worker 1,jobq worker 2'
		  FROM pg_stat_activity WHERE backend_type = 'jobq worker'}),
		'terminated worker replaced, pool back at jobq.workers');
	my @after = worker_pids($node);
	my %old = map { $_ => 1 } @before;
	is(scalar(grep { !$old{$_} } @after), 1, 'exactly one new jobq worker pid');
	is( $node->safe_psql(
			'postgres',
			"SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_activity WHERE backend_type = 'jobq worker'"
		),
		'jobq worker 1,jobq worker 2',
		'the replacement took the terminated worker\'s slot');

	ok(wait_for_job($node, $id),
		'interrupted job ran again and succeeded');
	my $st = $node->safe_psql('postgres',
		"SELECT attempts, last_sqlstate, worker_pid <> $pid FROM jobq.status($id)"
	);
	is($st, '1|57P01|t',
		'interrupted attempt not counted, the interruption recorded, finished by another worker'
	);
	is($node->safe_psql('postgres', 'SELECT count(*) FROM done WHERE job_id = 1'),
		'1', 'effect of the terminated job is in done exactly once');
	is(runs_logged(1), 2, 'job (a) ran exactly twice');
}

###########################################################################
# (b) kill -9 of a worker in the middle of a job
###########################################################################
{
	my $id = enqueue(2, 'max_attempts => 3');
	my $pid = wait_until_sleeping($id, 1);
	$node->safe_psql('postgres', "INSERT INTO flag VALUES ('2')");

	my $offset = -s $node->logfile;
	ok(kill('KILL', $pid), 'worker running the job killed with SIGKILL');
	wait_for_crash_restart($offset);

	ok(wait_for_job($node, $id),
		'job of the killed worker recovered after the crash restart and succeeded'
	);
	my $st = $node->safe_psql('postgres',
		"SELECT attempts, last_error FROM jobq.status($id)");
	like($st, qr/^2\|.*worker running the job exited/,
		'crashed attempt counted (attempts = 2) and recorded as an exited worker'
	);
	is($node->safe_psql('postgres', 'SELECT count(*) FROM done WHERE job_id = 2'),
		'1', 'effect of the crashed job is in done exactly once');
	is(runs_logged(2), 2, 'job (b) ran exactly twice');
}

###########################################################################
# (c) a job that crashes the server every time it runs, max_attempts => 2
###########################################################################
{
	my $id = enqueue(3, 'max_attempts => 2');

	for my $attempt (1 .. 2)
	{
		my $pid = wait_until_sleeping($id, $attempt);
		my $offset = -s $node->logfile;
		ok(kill('KILL', $pid), "attempt $attempt: worker killed with SIGKILL");
		wait_for_crash_restart($offset);
	}

	ok(wait_for_job($node, $id, 'failed'),
		'job that crashed the server twice ended failed');

	# a later job runs to completion: the workers are up and claiming, and
	# still the failed job does not come back
	my $barrier = $node->safe_psql('postgres', q{SELECT jobq.enqueue('SELECT 1')});
	ok(wait_for_job($node, $barrier), 'a later job succeeds');

	my $st = $node->safe_psql('postgres',
		"SELECT state, attempts, last_error FROM jobq.status($id)");
	like($st, qr/^failed\|2\|.*worker running the job exited/,
		'failed after 2 attempts, last_error says the worker exited');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM done WHERE job_id = 3'),
		'0', 'effects of the crashed runs never committed');
	is(runs_logged(3), 2, 'job (c) never ran a third time');
}

$node->stop;
done_testing();
