# 001_pool_reload.pl
#
# Proves that the jobq worker pool follows jobq.workers on reload:
#   - at start the pool has jobq.workers (2) workers;
#   - ALTER SYSTEM SET jobq.workers + pg_reload_conf() grows it to 4, then
#     shrinks it to 1;
#   - jobq.workers = 0 stops execution: with the pool empty, a job enqueued
#     then stays pending (checked after several poll intervals);
#   - back to 2, the pool comes back and the pending job runs;
#   - while a job runs, its worker's pg_stat_activity row shows backend_type
#     'jobq worker', state 'active' and the job's SQL as query; idle workers
#     show state 'idle';
#   - invalid values are rejected, not clamped: jobq.workers = -1 and
#     = 100000, and jobq.poll_interval = 0 fail with an error.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $node = new_jobq_node('main', conf => "max_worker_processes = 16\n");
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
$node->safe_psql('postgres', 'CREATE TABLE t (v int)');

sub set_workers
{
	my ($n) = @_;
	alter_system_reload($node, "jobq.workers = $n");
}

sub wait_pool
{
	my ($n, $name) = @_;
	ok(wait_for_backends($node, 'jobq worker', $n), $name);
}

# Initial pool: jobq.workers = 2, and a launcher.
wait_pool(2, 'pool starts with jobq.workers = 2 workers');
is(count_backends($node, 'jobq launcher'), '1', 'one launcher');

# Idle workers show state 'idle'.
ok( $node->poll_query_until(
		'postgres',
		"SELECT bool_and(state = 'idle') AND count(*) = 2 FROM pg_stat_activity
		  WHERE backend_type = 'jobq worker'"),
	'idle workers show state idle');

# A running job: its worker shows active with the job's SQL.
my $sleep_sql = 'SELECT pg_sleep(5)';
my $id = $node->safe_psql('postgres', "SELECT jobq.enqueue('$sleep_sql')");
ok( wait_for_backends(
		$node, 'jobq worker', 1, "state = 'active' AND query = '$sleep_sql'"),
	'running worker shows backend_type jobq worker, state active and the job SQL');
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity
	  WHERE backend_type = 'jobq worker' AND query = '$sleep_sql'");
is($node->safe_psql('postgres', "SELECT (jobq.status($id)).worker_pid"),
	$pid, 'that worker is the one running the job');
like(
	$node->safe_psql(
		'postgres',
		"SELECT application_name FROM pg_stat_activity WHERE pid = $pid"),
	qr/^jobq worker \d+$/,
	'running worker has application_name jobq worker N');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 AND bool_and(state = 'idle')
		   FROM pg_stat_activity
		  WHERE backend_type = 'jobq worker' AND pid <> $pid"),
	'the other worker shows state idle meanwhile');
ok(wait_for_job($node, $id), 'sleep job succeeds');
ok( $node->poll_query_until(
		'postgres',
		"SELECT state = 'idle' FROM pg_stat_activity WHERE pid = $pid"),
	'worker is idle again after its job');

# Grow to 4.
set_workers(4);
wait_pool(4, 'pool grows to 4');

# Shrink to 1.
set_workers(1);
wait_pool(1, 'pool shrinks to 1');

# 0 stops execution.
set_workers(0);
wait_pool(0, 'pool shrinks to 0');
is(count_backends($node, 'jobq launcher'),
	'1', 'launcher still runs with jobq.workers = 0');

my $id2 =
  $node->safe_psql('postgres', "SELECT jobq.enqueue('INSERT INTO t VALUES (1)')");
# Let several poll intervals (1s) pass: nobody may run the job.
$node->safe_psql('postgres', 'SELECT pg_sleep(3.5)');
is($node->safe_psql('postgres', "SELECT (jobq.status($id2)).state"),
	'pending', 'with jobq.workers = 0 an enqueued job stays pending');
is($node->safe_psql('postgres', 'SELECT count(*) FROM t'),
	'0', 'with jobq.workers = 0 the job has no effect');
is(count_backends($node, 'jobq worker'), '0', 'pool is still empty');

# Back to 2: the pending job runs.
set_workers(2);
wait_pool(2, 'pool comes back to 2');
ok(wait_for_job($node, $id2),
	'pending job runs once workers are back');
is($node->safe_psql('postgres', 'SELECT count(*) FROM t'),
	'1', 'job effect is there');

# Invalid values are rejected, not clamped.
foreach my $bad ('jobq.workers = -1', 'jobq.workers = 100000',
	'jobq.poll_interval = 0')
{
	my ($ret, $stdout, $stderr) =
	  $node->psql('postgres', "ALTER SYSTEM SET $bad");
	isnt($ret, 0, "ALTER SYSTEM SET $bad fails");
	like($stderr, qr/ERROR:/, "ALTER SYSTEM SET $bad reports an error");
}
# Nothing of that reached postgresql.auto.conf.
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
is($node->safe_psql('postgres', 'SHOW jobq.workers'),
	'2', 'jobq.workers unchanged after rejected values');
is($node->safe_psql('postgres', 'SHOW jobq.poll_interval'),
	'1s', 'jobq.poll_interval unchanged after rejected value');
wait_pool(2, 'pool still has 2 workers');

$node->stop;
done_testing();
