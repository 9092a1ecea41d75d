# 013_settle_not_held.pl: a role cannot stop the pool by holding the row
# of a job that waits for a job whose worker died.
#
# Job A swallows cancels and runs past its timeout, so its worker ends it
# by exiting; job D depends on A.  A session keeps D's row locked (its
# jobq.cancel(D), in a transaction left open).  The settlement of A's
# attempt runs under the lock every worker takes to settle, so it must
# not wait for D: A ends failed, and another job runs meanwhile.  Once the
# session rolls back, the workers' sweep cancels D because A failed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $node = new_jobq_node('main', conf => "jobq.cancel_grace = '1s'\n");
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');

my $a = $node->safe_psql('postgres',
	'SELECT jobq.enqueue($j$' . swallowing_loop() . q{$j$, timeout => '500ms', max_attempts => 1)});
my $d = $node->safe_psql('postgres',
	"SELECT jobq.enqueue('SELECT 1', depends_on => ARRAY[$a]::bigint[])");

my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
is($holder->query_safe("SELECT jobq.cancel($d)"), 't',
	'a session holds the waiting job\'s row (its cancel is not committed)');

ok(wait_for_job($node, $a, 'failed'),
	'the attempt of the job whose worker exited is counted while the row is held');
is( $node->safe_psql('postgres', "SELECT last_sqlstate FROM jobq.jobs WHERE id = $a"),
	'57014', 'it failed as timed out');
my $x = $node->safe_psql('postgres', "SELECT jobq.enqueue('SELECT 2')");
ok(wait_for_job($node, $x), 'another job runs meanwhile');

$holder->query_safe('ROLLBACK');
$holder->quit;
ok(wait_for_job($node, $d, 'cancelled'),
	'the sweep cancels the waiting job once its row is free');
is( $node->safe_psql('postgres', "SELECT last_error FROM jobq.jobs WHERE id = $d"),
	"job $a, which this job depends on, did not succeed",
	'with the reason');

$node->stop;
done_testing();
