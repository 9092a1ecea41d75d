# Copyright: jobq authors
#
# 015_dependent_held.pl: a role cannot hold a worker by keeping the row of
# a job that waits for one of its jobs.
#
# One worker.  Job P runs until a gate opens; job D depends on P.  A
# session of P's owner calls jobq.cancel(D) in a transaction it leaves
# open, which keeps D's row locked.  When P finishes, its worker settles
# P's dependents before it commits: it must not wait for D's row for as
# long as that session likes.  So P ends succeeded and a job enqueued
# afterwards runs on the same single worker, while the session still holds
# the row.  Once the session rolls back, D (no longer cancelled) is settled
# by the workers' sweep: P succeeded, so D runs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $node = new_jobq_node('main', conf => "jobq.workers = 1\n");
$node->safe_psql('postgres', q{
	CREATE EXTENSION jobq;
	CREATE TABLE gate (open boolean);
});
ok(wait_for_backends($node, 'jobq worker', 1), 'one worker runs');

my $p = $node->safe_psql('postgres', q{
	SELECT jobq.enqueue($j$
		DO $do$ BEGIN
			WHILE NOT EXISTS (SELECT FROM public.gate) LOOP
				PERFORM pg_catalog.pg_sleep(0.01);
			END LOOP;
		END $do$$j$)});
my $d = $node->safe_psql('postgres',
	"SELECT jobq.enqueue('SELECT 1', depends_on => ARRAY[$p]::bigint[])");
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 1 FROM jobq.workers WHERE job_id = $p"),
	'the job that the other waits for is running');

my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
is($holder->query_safe("SELECT jobq.cancel($d)"), 't',
	'a session holds the waiting job\'s row (its cancel is not committed)');

$node->safe_psql('postgres', 'INSERT INTO gate VALUES (true)');
ok(wait_for_job($node, $p), 'the job finishes while the row of its dependent is held');
my $x = $node->safe_psql('postgres', "SELECT jobq.enqueue('SELECT 2')");
ok(wait_for_job($node, $x), 'the only worker goes on to the next job');

$holder->query_safe('ROLLBACK');
$holder->quit;
ok(wait_for_job($node, $d),
	'once the session let go, the waiting job is settled by the sweep and runs');

$node->stop;
done_testing();
