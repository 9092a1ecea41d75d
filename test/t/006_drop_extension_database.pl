# 006_drop_extension_database.pl
#
# Proves that jobq's processes never stand in the way of dropping the
# extension or a database, and recover afterwards:
#   (a) DROP EXTENSION jobq while both workers run long jobs completes (it
#       waits for the in-flight execution transactions, whose effects are
#       committed, and must not hang); the workers stay alive (same pids)
#       and go idle, and the log does not keep filling with errors; CREATE EXTENSION jobq
#       again, and an enqueued job runs.
#   (b) DROP DATABASE of a database other than jobq.database completes
#       while the workers are busy, and their jobs still succeed.
#   (c) with jobq.database = 'jobqdb' and a long job running there,
#       DROP DATABASE jobqdb WITH (FORCE) from another database completes;
#       the launcher then waits quietly: the log says "jobq is waiting for
#       database" and the number of ERROR/FATAL lines about jobqdb stays
#       bounded over several poll intervals; CREATE DATABASE jobqdb +
#       CREATE EXTENSION jobq there + enqueue, and the job runs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

# Run $sql with a generous timeout; returns (ret, stderr, timed_out).
sub psql_with_timeout
{
	my ($node, $db, $sql) = @_;
	my ($stdout, $stderr, $timed_out);
	my $ret = $node->psql(
		$db, $sql,
		stdout => \$stdout,
		stderr => \$stderr,
		timeout => $PostgreSQL::Test::Utils::timeout_default,
		timed_out => \$timed_out);
	return ($ret, $stderr, $timed_out);
}

my $node = new_jobq_node('main');
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
$node->safe_psql('postgres', 'CREATE TABLE t (v int)');

ok(wait_for_backends($node, 'jobq worker', 2), '2 workers');

# ---------------------------------------------------------------------
# (a) DROP EXTENSION while the workers are busy
# ---------------------------------------------------------------------
# Each long job ends with a visible effect, so that we can tell whether
# its execution transaction committed.
my @drop_sql = map { "SELECT pg_sleep(5); INSERT INTO t VALUES ($_)" } (101, 102);
$node->safe_psql('postgres', "SELECT jobq.enqueue('$_')") for @drop_sql;
ok( wait_for_backends(
		$node, 'jobq worker', 2,
		"state = 'active' AND query IN ('$drop_sql[0]', '$drop_sql[1]')"),
	'(a) both workers run a long job');
my $pids_before = join(',', worker_pids($node));

my $offset = -s $node->logfile;
my ($ret, $stderr, $timed_out) =
  psql_with_timeout($node, 'postgres', 'DROP EXTENSION jobq');
ok(!$timed_out, '(a) DROP EXTENSION jobq does not hang');
is($ret, 0, '(a) DROP EXTENSION jobq succeeds while workers are busy')
  or diag $stderr;
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'jobq'"),
	'0',
	'(a) extension is gone');

# The long jobs end (or are abandoned); the workers go idle.
ok(wait_for_backends($node, 'jobq worker', 2, "state = 'idle'"),
	'(a) both workers are idle after the drop');
is(join(',', worker_pids($node)), $pids_before,
	'(a) the same workers are still alive');

# DROP EXTENSION waited for the in-flight execution transactions: the jobs
# that were running when it was issued committed their work.
is($node->safe_psql('postgres',
		'SELECT string_agg(v::text, \',\' ORDER BY v) FROM t'),
	'101,102',
	'(a) the jobs in flight during DROP EXTENSION committed their effects');

# No stream of errors: whatever the drop caused is bounded (at most one
# per job that was in flight), and does not grow over several polls.
my @err1 = log_lines_with_severity($node, $offset, qr/^(ERROR|FATAL|PANIC)$/);
$node->safe_psql('postgres', 'SELECT pg_sleep(3.5)');
my @err2 = log_lines_with_severity($node, $offset, qr/^(ERROR|FATAL|PANIC)$/);
cmp_ok(scalar(@err2), '<=', 2,
	'(a) at most one error per in-flight job after DROP EXTENSION')
  or diag join("\n", @err2);
is(scalar(@err2), scalar(@err1),
	'(a) no new errors while the workers idle without the extension')
  or diag join("\n", @err2);
is(join(',', worker_pids($node)), $pids_before, '(a) workers still the same');

# Recreate: the workers pick up new jobs.
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
my $id = $node->safe_psql('postgres',
	"SELECT jobq.enqueue('INSERT INTO t VALUES (1)')");
ok(wait_for_job($node, $id),
	'(a) a job enqueued after CREATE EXTENSION runs');
is($node->safe_psql('postgres', 'SELECT count(*) FROM t WHERE v = 1'),
	'1', '(a) its effect is there');

# ---------------------------------------------------------------------
# (b) DROP DATABASE of another database while the workers are busy
# ---------------------------------------------------------------------
my $sleep_sql = 'SELECT pg_sleep(5)';
$node->safe_psql('postgres', 'CREATE DATABASE other');
my @ids;
push @ids, $node->safe_psql('postgres', "SELECT jobq.enqueue('$sleep_sql')")
  for 1 .. 2;
ok( wait_for_backends(
		$node, 'jobq worker', 2, "state = 'active' AND query = '$sleep_sql'"),
	'(b) both workers run a long job');
($ret, $stderr, $timed_out) =
  psql_with_timeout($node, 'postgres', 'DROP DATABASE other');
ok(!$timed_out, '(b) DROP DATABASE other does not hang');
is($ret, 0, '(b) DROP DATABASE other succeeds while workers are busy')
  or diag $stderr;
my $idlist = join(',', @ids);
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM jobq.jobs WHERE id IN ($idlist) AND state = 'succeeded'",
		'2'),
	'(b) the busy workers finish their jobs');

$node->stop;

# ---------------------------------------------------------------------
# (c) DROP DATABASE jobq.database WITH (FORCE)
# ---------------------------------------------------------------------
my $node2 = new_jobq_node('jobqdb', conf => "jobq.database = 'jobqdb'\n");
$node2->safe_psql('postgres', 'CREATE DATABASE jobqdb');
$node2->safe_psql('jobqdb', 'CREATE EXTENSION jobq');
$node2->safe_psql('jobqdb', 'CREATE TABLE t (v int)');
ok(wait_for_backends($node2, 'jobq worker', 2, "datname = 'jobqdb'"),
	'(c) 2 workers connected to jobqdb');
my $long_sql = 'SELECT pg_sleep(60)';
my $lid = $node2->safe_psql('jobqdb', "SELECT jobq.enqueue('$long_sql')");
ok( wait_for_backends(
		$node2, 'jobq worker', 1, "state = 'active' AND query = '$long_sql'"),
	'(c) a long job runs in jobqdb');

$offset = -s $node2->logfile;
($ret, $stderr, $timed_out) =
  psql_with_timeout($node2, 'postgres', 'DROP DATABASE jobqdb WITH (FORCE)');
ok(!$timed_out, '(c) DROP DATABASE jobqdb WITH (FORCE) does not hang');
is($ret, 0, '(c) DROP DATABASE jobqdb WITH (FORCE) succeeds') or diag $stderr;

ok( $node2->wait_for_log(qr/jobq is waiting for database "jobqdb"/, $offset),
	'(c) launcher says it is waiting for jobqdb');
ok(wait_for_backends($node2, 'jobq worker', 0),
	'(c) no worker runs without jobqdb');
is(count_backends($node2, 'jobq launcher'),
	'1', '(c) the launcher is still there');

my @jdb1 =
  log_lines_with_severity($node2, $offset, qr/^(ERROR|FATAL)$/, qr/jobqdb/);
# Several poll intervals, and several of the launcher's database checks.
$node2->safe_psql('postgres', 'SELECT pg_sleep(4)');
my @jdb2 =
  log_lines_with_severity($node2, $offset, qr/^(ERROR|FATAL)$/, qr/jobqdb/);
is(scalar(@jdb2), scalar(@jdb1),
	'(c) errors about jobqdb do not keep repeating while it is missing')
  or diag join("\n", @jdb2);
cmp_ok(scalar(@jdb2), '<=', 3, '(c) errors about jobqdb are bounded')
  or diag join("\n", @jdb2);
my @waiting = grep { /jobq is waiting for database "jobqdb"/ }
  split /\n/, slurp_file($node2->logfile, $offset);
is(scalar(@waiting), 1, '(c) the waiting message is logged once');
ok($node2->safe_psql('postgres', 'SELECT 1') eq '1', '(c) server is up');

# Recreate the database: workers come back and run a new job.
$node2->safe_psql('postgres', 'CREATE DATABASE jobqdb');
$node2->safe_psql('jobqdb', 'CREATE EXTENSION jobq');
$node2->safe_psql('jobqdb', 'CREATE TABLE t (v int)');
my $nid = $node2->safe_psql('jobqdb',
	"SELECT jobq.enqueue('INSERT INTO t VALUES (42)')");
ok(wait_for_job($node2, $nid, 'succeeded', 'jobqdb'),
	'(c) a job in the recreated jobqdb runs');
is($node2->safe_psql('jobqdb', 'SELECT string_agg(v::text, \',\') FROM t'),
	'42', '(c) its effect is there');
ok(wait_for_backends($node2, 'jobq worker', 2, "datname = 'jobqdb'"),
	'(c) the pool is back to 2 workers in jobqdb');

$node2->stop;
done_testing();
