# 008_transactional_wakeup.pl
#
# Proves that enqueueing is transactional and that workers are woken at
# the right moment:
#   - a job enqueued in a transaction that rolls back never runs (no side
#     effect, not in jobq.jobs), even after a later committed job has run
#     and claims have passed it over (probe jobs of a lower priority ran);
#   - a job enqueued in a transaction that is still open does not run
#     (claims pass it over), and runs after COMMIT;
#   - a job with run_at => now() + 3 seconds does not start before its
#     run_at (started_at >= run_at, and the time its effect records is
#     >= run_at) and does start: with jobq.poll_interval raised to 10min
#     for that part, only the wake-up at the earliest run_at can start it;
#   - with max_prepared_transactions = 5, a job enqueued in a transaction
#     that is PREPAREd does not run while prepared, and runs after
#     COMMIT PREPARED (found by the poll safety net).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $node = new_jobq_node('main', conf => "max_prepared_transactions = 5\n");
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
$node->safe_psql('postgres', 'CREATE TABLE t (v int)');
$node->safe_psql('postgres', 'CREATE TABLE ts (v int, at timestamptz)');
ok(wait_for_backends($node, 'jobq worker', 2, "state = 'idle'"),
	'2 idle workers');

sub t_count
{
	my ($v) = @_;
	return $node->safe_psql('postgres', "SELECT count(*) FROM t WHERE v = $v");
}

# probe_claims(): the positive sign that the workers' claims have looked
# at the queue: a job of the lowest priority per worker, enqueued now,
# has run.  A claim takes the highest priority first, so every claim that
# took a probe passed over any job of a higher priority that it could see.
sub probe_claims
{
	my @ids = map {
		$node->safe_psql('postgres',
			"SELECT jobq.enqueue('SELECT 1', priority => -1000)")
	} (1, 2);
	wait_for_job($node, $_) or die "probe job $_ did not run" foreach @ids;
	return 1;
}

# ---------------------------------------------------------------------
# Rolled back: never runs
# ---------------------------------------------------------------------
my $rid = $node->safe_psql('postgres',
	"BEGIN; SELECT jobq.enqueue('INSERT INTO t VALUES (1)', priority => 10); ROLLBACK;");
like($rid, qr/^\d+$/, 'enqueue in a rolled back transaction returned an id');

# A committed job afterwards runs; and claims after it pass the rolled
# back one over.
my $sid = $node->safe_psql('postgres',
	"SELECT jobq.enqueue('INSERT INTO t VALUES (2)')");
ok(wait_for_job($node, $sid),
	'a committed job enqueued after the rollback runs');
ok(probe_claims(), 'claims have looked at the queue since');
is(t_count(1), '0', 'rolled back job has no side effect');
is($node->safe_psql('postgres', "SELECT count(*) FROM jobq.jobs WHERE id = $rid"),
	'0', 'rolled back job does not exist in jobq.jobs');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM jobq.jobs WHERE command = 'INSERT INTO t VALUES (1)'"
	),
	'0',
	'no trace of the rolled back job');

# ---------------------------------------------------------------------
# Open transaction: runs only after COMMIT
# ---------------------------------------------------------------------
my $session = $node->background_psql('postgres');
$session->query_safe('BEGIN');
my $oid = $session->query_safe(
	"SELECT jobq.enqueue('INSERT INTO t VALUES (3)', priority => 10)");
like($oid, qr/^\d+$/, 'enqueue in an open transaction returned an id');

# Claims with the transaction open pass it over.
ok(probe_claims(), 'claims look at the queue while the transaction is open');
is(t_count(3), '0', 'job of an open transaction has not run');
is($node->safe_psql('postgres', "SELECT count(*) FROM jobq.jobs WHERE id = $oid"),
	'0', 'job of an open transaction is invisible to others');

$session->query_safe('COMMIT');
ok(wait_for_job($node, $oid),
	'job runs after COMMIT');
is(t_count(3), '1', 'its effect is there, once');
$session->quit;

# ---------------------------------------------------------------------
# Future run_at: not before, but at its time
# ---------------------------------------------------------------------
# Make the poll useless for this part: only the wake-up at the earliest
# run_at can start the job within the test's timeout.
# Workers started after the reload have the setting (a running one rereads
# it at a moment the test cannot see).
alter_system_reload($node, "jobq.poll_interval = '10min'");
alter_system_reload($node, "jobq.workers = 0");
ok(wait_for_backends($node, 'jobq worker', 0), 'the pool stops');
alter_system_reload($node, "jobq.workers = 2");
ok(wait_for_backends($node, 'jobq worker', 2, "state = 'idle'"),
	'the pool starts again with poll_interval 10min');

my $fid = $node->safe_psql('postgres',
	"SELECT jobq.enqueue('INSERT INTO ts VALUES (4, clock_timestamp())',
	                     run_at => now() + interval '3 seconds')");
ok(wait_for_job($node, $fid),
	'job with a future run_at runs once due (poll_interval is 10min)');
is( $node->safe_psql(
		'postgres',
		"SELECT s.started_at >= s.run_at FROM jobq.status($fid) s"),
	't',
	'job did not start before its run_at');
is( $node->safe_psql(
		'postgres',
		"SELECT ts.at >= s.run_at FROM ts, jobq.status($fid) s WHERE ts.v = 4"),
	't',
	'job effect happened at or after run_at');
is( $node->safe_psql(
		'postgres',
		"SELECT s.run_at >= s.created_at + interval '3 seconds' FROM jobq.status($fid) s"),
	't',
	'run_at was kept as requested');

# ---------------------------------------------------------------------
# PREPARE TRANSACTION / COMMIT PREPARED: found by the poll
# ---------------------------------------------------------------------
alter_system_reload($node, "jobq.poll_interval = '1s'");
my $pid = $node->safe_psql('postgres',
	"BEGIN; SELECT jobq.enqueue('INSERT INTO t VALUES (5)', priority => 10); PREPARE TRANSACTION 'jobq_p1';"
);
like($pid, qr/^\d+$/, 'enqueue in a prepared transaction returned an id');
ok(probe_claims(), 'claims look at the queue while it is prepared');
is(t_count(5), '0', 'job of a prepared transaction has not run');
$node->safe_psql('postgres', "COMMIT PREPARED 'jobq_p1'");
ok(wait_for_job($node, $pid),
	'job runs after COMMIT PREPARED');
is(t_count(5), '1', 'its effect is there, once');

$node->stop;
done_testing();
