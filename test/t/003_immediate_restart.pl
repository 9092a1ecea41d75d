# Copyright: jobq authors
#
# 003_immediate_restart.pl: an immediate shutdown (the postmaster and every
# backend killed with SIGQUIT, crash recovery at the next start) in the
# middle of a load of jobs loses no job and runs none twice.
#
# 300 jobs, each inserting its own tag into "done" and sleeping a little,
# are enqueued for two workers.  Once some have succeeded and most are
# still pending, the node is stopped in immediate mode and started again.
# Then every job must end 'succeeded', none may be left running or pending,
# and every job's effect must be in "done" exactly once: a job whose effect
# committed must have its 'succeeded' record committed with it, and a job
# interrupted mid-run must run again after the restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $njobs = 300;

my $node = new_jobq_node('main');
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
$node->safe_psql('postgres', 'CREATE TABLE done (job_id bigint)');

wait_for_backends($node, 'jobq worker', 2)
  or die "jobq workers did not start";

# jobmap: tag of each job -> its id.  A job inserts its tag into done.
$node->safe_psql(
	'postgres', qq{
	CREATE TABLE jobmap AS
	SELECT i AS tag,
	       jobq.enqueue(format('INSERT INTO done VALUES (%s); SELECT pg_sleep(0.02)', i)) AS id
	  FROM generate_series(1, $njobs) i});

# Some jobs have succeeded, many are still to run.
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) >= 30 FROM jobq.jobs WHERE state = 'succeeded'"),
	'some jobs succeeded before the stop');

$node->stop('immediate');
$node->start;

ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = $njobs FROM jobq.jobs WHERE state = 'succeeded'"),
	'every job succeeded after the restart');

# The load was really interrupted: some jobs finished before the restart,
# some after it.
is( $node->safe_psql(
		'postgres', q{
		SELECT count(*) FILTER (WHERE finished_at < pg_postmaster_start_time()) > 0,
		       count(*) FILTER (WHERE finished_at > pg_postmaster_start_time()) > 0
		  FROM jobq.jobs}),
	't|t',
	'the immediate stop interrupted the load: jobs finished before and after it'
);

is( $node->safe_psql(
		'postgres', q{
		SELECT count(*) FROM jobmap m JOIN jobq.jobs j USING (id)
		 WHERE j.state = 'succeeded'}),
	$njobs,
	'no job lost: every enqueued job is succeeded');
is($node->safe_psql('postgres', "SELECT count(*) FROM jobq.jobs WHERE state <> 'succeeded'"),
	'0', 'no job left running, pending or failed');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.job'),
	'0', 'no unfinished job left in jobq.job');

is( $node->safe_psql(
		'postgres',
		'SELECT count(*), count(DISTINCT job_id) FROM done'),
	"$njobs|$njobs",
	'every job\'s effect is in done exactly once');
is( $node->safe_psql(
		'postgres', q{
		SELECT count(*) FROM jobmap m FULL JOIN done d ON d.job_id = m.tag
		 WHERE m.tag IS NULL OR d.job_id IS NULL}),
	'0',
	'done holds exactly the tags of the enqueued jobs');

note 'jobs run twice because the stop interrupted them: '
  . $node->safe_psql('postgres',
	'SELECT count(*) FROM jobq.jobs WHERE attempts > 1');

$node->stop;
done_testing();
