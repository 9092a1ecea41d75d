# Copyright: jobq authors
#
# 014_pool_storms.pl: the pool comes back from faults at once, and no fault
# loses a job or runs one twice.  Behaviour only: no assertion on timing.
#
#   (a) A terminate storm: pg_terminate_backend() of every worker that runs,
#       again and again, while jobs run.  Each worker is replaced at once and
#       the log says why; no restart delay is ever applied (no "failed to
#       start"); afterwards the pool is back at its size and every job's
#       effect is there exactly once.
#   (b) A resize storm: jobq.workers changed twenty times, reloaded each
#       time, while jobs run.  The pool never has more workers than the
#       largest size asked for, ends at the last size asked for, and every
#       job's effect is there exactly once.  A worker asked to stop shows as
#       'stopping', and stays (same process) when the pool grows back before
#       it has gone.
#   (c) The launcher terminated: the workers go on (same processes), a job
#       enqueued meanwhile runs, the new launcher says it adopted them, and it
#       manages them: an adopted worker terminated is replaced at once, and a
#       smaller pool stops an adopted worker.
#   (d) A terminate storm with slow jobs at the head of the queue: more jobs
#       slower than a worker's life between two terminations than there are
#       workers, enqueued first, then fast ones.  The fast jobs all complete
#       while the storm goes on (progress, not a rate: the storm stops when
#       they are done, or after a generous deadline); once it ends, the slow
#       ones finish too, each exactly once, with their interrupted attempts
#       not counted.  Before interrupted jobs were put back behind the others
#       (finish.c), every replacement worker started one of the slow jobs
#       and was terminated in it: nothing completed while the storm lasted.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $node = new_jobq_node('main', conf => "jobq.workers = 3\n");
$node->safe_psql('postgres', q{
	CREATE EXTENSION jobq;
	CREATE TABLE done (tag int);
	CREATE TABLE gate (k text PRIMARY KEY);
});
ok(wait_for_backends($node, 'jobq worker', 3), 'the pool starts with 3 workers');

# enqueue($n, $first): $n jobs, tags $first .. $first+$n-1, each inserting its
# tag into done and sleeping 10 ms; enough attempts that no storm fails one.
sub enqueue
{
	my ($n, $first) = @_;
	my $last = $first + $n - 1;
	$node->safe_psql('postgres', qq{
		SELECT count(jobq.enqueue(format('INSERT INTO done VALUES (%s); SELECT pg_sleep(0.01)', i),
		                          max_attempts => 1000))
		  FROM generate_series($first, $last) i});
}

# all_done($first, $last): every job of those tags succeeded, and done holds
# each tag exactly once.
sub all_done
{
	my ($first, $last, $what) = @_;
	my $n = $last - $first + 1;
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 0 FROM jobq.job"),
		"$what: every job finished");
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FILTER (WHERE state = 'succeeded') FROM jobq.jobs"
			  . " WHERE command LIKE 'INSERT INTO done VALUES (%'"
			  . " AND substring(command from '\\((\\d+)\\)')::int BETWEEN $first AND $last"),
		$n, "$what: all $n jobs succeeded");
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) || ',' || count(DISTINCT tag) FROM done WHERE tag BETWEEN $first AND $last"),
		"$n,$n", "$what: every job's effect is there exactly once");
}

# gated_job($key): a job that runs until a row $key is in gate; its id
sub gated_job
{
	my ($key) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT jobq.enqueue(\$j\$
			DO \$do\$ BEGIN
				WHILE NOT EXISTS (SELECT FROM public.gate WHERE k = '$key') LOOP
					PERFORM pg_catalog.pg_sleep(0.01);
				END LOOP;
			END \$do\$\$j\$)});
}

# wait_running($id): poll until a worker runs job $id
sub wait_running
{
	my ($id) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM jobq.workers WHERE job_id = $id");
}

# (a) the terminate storm: only workers that reached their loop (they
# report a state) are hit, as a client would see them.
my $offset = -s $node->logfile;
enqueue(1000, 1);
my $kills = 0;
foreach my $round (1 .. 30)
{
	$kills += $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		  FROM pg_stat_activity
		 WHERE backend_type = 'jobq worker' AND state IN ('active', 'idle')});
	usleep(200_000);
}
cmp_ok($kills, '>=', 10, "(a) the storm terminated workers ($kills)");
ok(wait_for_backends($node, 'jobq worker', 3), '(a) the pool is back at 3 workers');
all_done(1, 1000, '(a)');
my @replaced = log_lines_with_severity($node, $offset, qr/^LOG$/,
	qr/jobq worker \d+ (\(PID \d+\) )?exited; starting a new one at once/);
cmp_ok(scalar(@replaced), '>=', 1, '(a) the log says terminated workers were replaced at once');
my @delayed = log_lines_with_severity($node, $offset, qr/^LOG$/,
	qr/failed to start/);
is(scalar(@delayed), 0, '(a) no restart delay was applied to a worker that had started')
  or diag join("\n", @delayed);

# (d) the terminate storm with slow jobs at the head of the queue: six jobs
# of 3 s for 3 workers, enqueued first, then 300 fast jobs, while every
# worker is terminated every 200 ms.
my $slow_ids = $node->safe_psql('postgres', q{
	SELECT string_agg(jobq.enqueue(format('INSERT INTO done VALUES (%s); SELECT pg_sleep(3)', i),
	                               max_attempts => 1000)::text, ',')
	  FROM generate_series(2001, 2006) i});
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 3 FROM jobq.workers WHERE job_id IN ($slow_ids)"),
	'(d) the slow jobs hold the 3 workers');
enqueue(300, 2101);
my $storm_kills = 0;
my $fast_done = 0;
my $deadline = time() + 90;
while (time() < $deadline)
{
	$storm_kills += $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		  FROM pg_stat_activity WHERE backend_type = 'jobq worker'});
	usleep(200_000);
	$fast_done = $node->safe_psql('postgres',
		'SELECT count(*) FROM done WHERE tag BETWEEN 2101 AND 2400');
	last if $fast_done == 300;
}
my $slow_during = $node->safe_psql('postgres',
	'SELECT count(*) FROM done WHERE tag BETWEEN 2001 AND 2006');
cmp_ok($storm_kills, '>=', 10, "(d) the storm terminated workers ($storm_kills)");
is($fast_done, 300,
	'(d) the fast jobs behind the slow ones all completed during the storm');
ok(wait_for_backends($node, 'jobq worker', 3), '(d) the pool is back at 3 workers');
all_done(2001, 2006, '(d) slow jobs');
all_done(2101, 2400, '(d) fast jobs');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM jobq.jobs WHERE id IN ($slow_ids) AND attempts = 1"),
	6, '(d) the interrupted runs of the slow jobs were not counted as attempts')
  or diag "slow jobs done during the storm: $slow_during";

# (b) the resize storm, while jobs run; the largest size asked for is 4.
enqueue(600, 1001);
my $most = 0;
foreach my $size (0, 4, 1, 3, 0, 2, 4, 0, 1, 4, 2, 0, 3, 1, 4, 0, 2, 3, 1, 2)
{
	alter_system_reload($node, "jobq.workers = $size");
	foreach (1 .. 3)
	{
		my $n = count_backends($node, 'jobq worker');
		$most = $n if $n > $most;
		usleep(100_000);
	}
}
alter_system_reload($node, 'jobq.workers = 3');
cmp_ok($most, '<=', 4, "(b) never more workers than the largest size asked for (saw $most)");
ok(wait_for_backends($node, 'jobq worker', 3), '(b) the pool ends at the last size asked for');
all_done(1001, 1600, '(b)');

# A worker asked to stop shows as stopping, and stays if the pool grows
# back before it has gone.
my $held = gated_job('b');
ok(wait_running($held), '(b) a job holds a worker');
my ($slot, $pid) = split /\|/, $node->safe_psql('postgres',
	"SELECT worker, pid FROM jobq.workers WHERE job_id = $held");
alter_system_reload($node, 'jobq.workers = 0');
ok( $node->poll_query_until(
		'postgres', "SELECT state = 'stopping' FROM jobq.workers WHERE worker = $slot"),
	'(b) the worker shows as stopping while it finishes its job');
alter_system_reload($node, 'jobq.workers = 3');
ok( $node->poll_query_until(
		'postgres', "SELECT state = 'busy' FROM jobq.workers WHERE worker = $slot"),
	'(b) the pool grew back: the worker is busy again, not stopping');
is($node->safe_psql('postgres', "SELECT pid FROM jobq.workers WHERE worker = $slot"),
	$pid, '(b) it is the same process');
$node->safe_psql('postgres', "INSERT INTO gate VALUES ('b')");
ok(wait_for_job($node, $held), '(b) its job finishes');
ok(wait_for_backends($node, 'jobq worker', 3), '(b) the pool is at 3 workers');

# (c) the launcher terminated while a job runs.
my $gated = gated_job('c');
ok(wait_running($gated), '(c) a job is running');
my $pids_before = join(',', worker_pids($node));
my $launcher = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'jobq launcher'");
$offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($launcher)");
my $during = $node->safe_psql('postgres', "SELECT jobq.enqueue('INSERT INTO done VALUES (5000)')");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'jobq launcher' AND pid <> $launcher"),
	'(c) the postmaster starts a new launcher');
ok($node->wait_for_log(qr/jobq launcher adopted 3 running workers/, $offset),
	'(c) the new launcher adopted the 3 running workers');
is(join(',', worker_pids($node)), $pids_before, '(c) the workers are the same processes');
ok(wait_for_job($node, $during), '(c) a job enqueued while the launcher was gone ran');
$node->safe_psql('postgres', "INSERT INTO gate VALUES ('c')");
ok(wait_for_job($node, $gated), '(c) the job that ran across the launcher\'s exit finished');

# the new launcher manages the workers it adopted
my $victim = (worker_pids($node))[0];
$offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($victim)");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 3 FROM pg_stat_activity WHERE backend_type = 'jobq worker' AND pid <> $victim"),
	'(c) an adopted worker that was terminated is replaced');
ok($node->wait_for_log(qr/\(PID $victim\) exited; starting a new one at once|jobq worker \d+ exited; starting a new one at once/, $offset),
	'(c) the log says it was replaced at once');
alter_system_reload($node, 'jobq.workers = 1');
ok(wait_for_backends($node, 'jobq worker', 1), '(c) a smaller pool stops adopted workers');
alter_system_reload($node, 'jobq.workers = 2');
ok(wait_for_backends($node, 'jobq worker', 2), '(c) and grows again');

$node->stop;
done_testing();
