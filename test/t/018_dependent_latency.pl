# Copyright: jobq authors
#
# 018_dependent_latency.pl: a dependent starts once the job it depends on
# has succeeded, however close together the two transactions are.
#
# 1,000 tight pairs, as the README's guide writes them: a 'SELECT 1' job,
# then in the next autocommit statement a job that depends on it.  The
# first job often finishes while the second one's enqueue is under way:
# the enqueue's check sees it unfinished, and its worker's settlement
# does not see the uncommitted dependent (see depend.c).  Both sides then
# look again after their commits, and a worker settles the dependent.
#
# jobq.poll_interval is an hour, so an idle worker looks for work only
# when something wakes it.  A dependent that nobody settled and woke a
# worker for would wait for the workers' sweep of waiting jobs, which
# comes every ten seconds at most, and only once a worker wakes: after
# the last pairs, when the workers' statistics are due, ten seconds later
# (the bug: 240 of 1,000 dependents waited 11 s).  Asserted: every
# dependent runs and succeeds, and the worst wait (from the end of the job
# depended on to the start of its dependent) is under 5 s, half the
# sweep's period and far above a wake-up's latency, even on a loaded
# machine.  The worst wait is reported.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $pairs = 1000;

my $node = new_jobq_node('main', conf => "jobq.poll_interval = '1h'\n");
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
ok(wait_for_backends($node, 'jobq worker', 2), 'two workers run');

# one psql session, one statement after the other, as in the README
my $script = '';
for my $i (1 .. $pairs)
{
	$script .= "SELECT jobq.enqueue('SELECT 1') AS a \\gset\n";
	$script .= "SELECT jobq.enqueue('SELECT 1', depends_on => ARRAY[:a]::bigint[]);\n";
}
my $start = time();
$node->safe_psql('postgres', $script);
note(sprintf('enqueued %d pairs in %.1f s', $pairs, time() - $start));

# every job finished: the dependents too, with no poll to fall back on
my $deadline = 180;
my $left;
$start = time();
while (time() - $start < $deadline)
{
	$left = $node->safe_psql('postgres', 'SELECT count(*) FROM jobq.job');
	last if $left eq '0';
	usleep(100_000);
}
is($left, '0', "every job finished within $deadline s");

my ($dependents, $succeeded, $worst, $p99, $over_1s) = split /\|/,
  $node->safe_psql(
	'postgres', q{
	SELECT count(*), count(*) FILTER (WHERE d.state = 'succeeded'),
	       round(max(w) * 1000), round((percentile_cont(0.99) WITHIN GROUP (ORDER BY w) * 1000)::numeric),
	       count(*) FILTER (WHERE w > 1)
	  FROM jobq.job_history d
	  JOIN jobq.job_history a ON a.id = d.depends_on[1],
	       LATERAL (SELECT extract(epoch FROM d.started_at - a.finished_at)::float8 AS w) x
	 WHERE a.state = 'succeeded'});
is($dependents, $pairs, 'every dependent is in the history');
is($succeeded, $pairs, 'every dependent succeeded');
diag("worst wait of a dependent: $worst ms (99th percentile $p99 ms; over 1 s: $over_1s of $pairs)");
cmp_ok($worst, '<', 5000,
	'no dependent waited for the sweep of waiting jobs');

my $waiting = $node->safe_psql('postgres',
	'SELECT count(*) FROM jobq.job WHERE not_before IS NOT NULL');
is($waiting, '0', 'no job is left waiting');

$node->stop;
done_testing();
