# Copyright: jobq authors
#
# 020_cancel_retried.pl: a jobq.cancel() that gives up and is called again
# still asks.  A caller cancels a job that catches the cancel, under a
# statement_timeout shorter than jobq.cancel_grace, in a loop: each call
# withdraws its request when it times out, and the next publishes a new
# one.  The watchdog counts the grace from the first request, across the
# gaps between calls, and ends the job by exiting; before, a grace that
# started over with each call (or at any look that found no request)
# never ran out, and the job ran on for as long as the caller kept asking.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $node = new_jobq_node('main', conf => "jobq.cancel_grace = '2s'\n");
$node->safe_psql('postgres', q{
	CREATE EXTENSION jobq;
	CREATE TABLE effects (t text);
});

my $job = $node->safe_psql('postgres',
	"SELECT jobq.enqueue(\$j\$INSERT INTO public.effects VALUES ('x'); "
	  . swallowing_loop() . "\$j\$, timeout => '0')");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM jobq.workers w JOIN pg_stat_activity a ON a.pid = w.pid
		  WHERE w.job_id = $job AND a.wait_event = 'PgSleep'"),
	'the job is running, in its loop');

# the caller: each call gives up after a quarter of the grace, and it
# calls again 0.3 s later (longer than the watchdog's tick, so that a tick
# always falls between two calls), until the job has ended; a generous
# deadline of 120 calls
my ($calls, $ended) = (0, 0);
while ($calls < 120)
{
	$calls++;
	usleep(300_000) if $calls > 1;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SET statement_timeout = '500ms'; SELECT jobq.cancel($job)");
	my $state = $node->safe_psql('postgres', "SELECT state FROM jobq.jobs WHERE id = $job");
	if ($state ne 'running' && $state ne 'pending')
	{
		$ended = 1;
		last;
	}
}
ok($ended, "the job ended while its cancel was asked again and again ($calls calls)");
is($node->safe_psql('postgres', "SELECT state FROM jobq.jobs WHERE id = $job"),
	'cancelled', 'it ended cancelled');
is($node->safe_psql('postgres', 'SELECT count(*) FROM effects'),
	'0', 'its effect was rolled back');
ok(wait_for_backends($node, 'jobq worker', 2), 'the pool is back at its size');

$node->stop;
done_testing();
