# 005_standby_promotion.pl
#
# Proves that nothing of jobq runs on a hot standby, and that a promoted
# standby runs the jobs it inherited:
#   - a primary and a streaming standby both preload jobq;
#   - the primary has a launcher and workers; the standby has neither a
#     'jobq launcher' nor a 'jobq worker' in pg_stat_activity, even while
#     jobs are pending on the primary (checked over several poll
#     intervals, after the jobs have replicated);
#   - jobs enqueued on the primary while its jobq.workers = 0 stay pending
#     and replicate to the standby;
#   - after the primary stops and the standby is promoted, the standby's
#     launcher starts, its workers run the pending jobs, which end
#     succeeded, and their effects are there.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $primary = new_jobq_node('primary', allows_streaming => 1);
$primary->safe_psql('postgres', 'CREATE EXTENSION jobq');
$primary->safe_psql('postgres', 'CREATE TABLE t (v int)');

my $jobq_procs = "SELECT count(*) FROM pg_stat_activity
  WHERE backend_type IN ('jobq launcher', 'jobq worker')";

# Positive control: the primary does run jobq.
ok(wait_for_backends($primary, 'jobq worker', 2),
	'primary runs 2 jobq workers');
is(count_backends($primary, 'jobq launcher'),
	'1', 'primary runs a jobq launcher');

$primary->backup('bkp');

my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'bkp', has_streaming => 1);
# The standby's own settings: jobq preloaded and 2 workers once promoted.
$standby->append_conf('postgresql.conf', jobq_conf());
$standby->start;

# Stop execution on the primary (postgresql.auto.conf is not replicated,
# and the standby's copy was taken before this).
alter_system_reload($primary, 'jobq.workers = 0');
ok(wait_for_backends($primary, 'jobq worker', 0),
	'primary pool stopped with jobq.workers = 0');

my @ids;
foreach my $i (1 .. 3)
{
	push @ids,
	  $primary->safe_psql('postgres',
		"SELECT jobq.enqueue('INSERT INTO t VALUES ($i)')");
}
my $idlist = join(',', @ids);

$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));

is( $standby->safe_psql(
		'postgres',
		"SELECT string_agg(state::text, ',' ORDER BY id) FROM jobq.jobs WHERE id IN ($idlist)"
	),
	'pending,pending,pending',
	'pending jobs replicated to the standby');
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'),
	't', 'standby is in recovery');

# Let several poll intervals pass: still no jobq process on the standby.
$standby->safe_psql('postgres', 'SELECT pg_sleep(3)');
is($standby->safe_psql('postgres', $jobq_procs),
	'0', 'no jobq launcher or worker on the standby');
is( $standby->safe_psql(
		'postgres', "SELECT count(*) FROM t"),
	'0', 'no job effect on the standby');
is( $primary->safe_psql(
		'postgres',
		"SELECT string_agg(state::text, ',' ORDER BY id) FROM jobq.jobs WHERE id IN ($idlist)"
	),
	'pending,pending,pending',
	'jobs still pending on the primary');
ok( !$standby->log_contains(qr/jobq launcher started/),
	'standby log shows no jobq launcher start');

# Failover.
$primary->stop;
$standby->promote;
ok( $standby->poll_query_until(
		'postgres', 'SELECT NOT pg_is_in_recovery()'),
	'standby promoted');

ok(wait_for_backends($standby, 'jobq launcher', 1),
	'launcher starts on the promoted standby');
ok(wait_for_backends($standby, 'jobq worker', 2),
	'workers start on the promoted standby');

ok( $standby->poll_query_until(
		'postgres',
		"SELECT bool_and(state = 'succeeded') AND count(*) = 3
		   FROM jobq.jobs WHERE id IN ($idlist)"),
	'pending jobs run and succeed after promotion');
is($standby->safe_psql('postgres', 'SELECT string_agg(v::text, \',\' ORDER BY v) FROM t'),
	'1,2,3', 'job effects are there, once each');

# The promoted server keeps working as a queue.
my $id4 = $standby->safe_psql('postgres',
	"SELECT jobq.enqueue('INSERT INTO t VALUES (4)')");
ok(wait_for_job($standby, $id4),
	'a job enqueued after promotion runs');

$standby->stop;
done_testing();
