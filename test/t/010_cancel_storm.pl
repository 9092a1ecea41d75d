# Copyright: jobq authors
#
# 010_cancel_storm.pl: no number of jobq.cancel() calls can keep another
# role's jobq.cancel() from working, and a job that swallows the cancel is
# ended all the same.
#
# Two workers each run a job that catches query_canceled in a loop (so the
# cancel interrupts it, and it goes on).  Seventy sessions cancel the first
# job at once (in 0.3.0 the shared request array had 64 entries: the
# 65th call and every other role's call spun); then another role cancels
# the second job.  After jobq.cancel_grace each worker ends its job by
# exiting: every call returns, both jobs end cancelled, their effects are
# rolled back, the server log says why, and the pool is back at two
# workers.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $callers = 70;
# a grace long enough for the storm to gather on a loaded machine
my $node = new_jobq_node('main',
	conf => "max_connections = 120\njobq.cancel_grace = '30s'\n");
$node->safe_psql('postgres', q{
	CREATE EXTENSION jobq;
	CREATE ROLE storm_other LOGIN;
	GRANT USAGE ON SCHEMA jobq TO storm_other;
	CREATE TABLE effects (t text);
	GRANT INSERT ON effects TO storm_other;
});

my $swallow = q{INSERT INTO public.effects VALUES ('%s');
	} . swallowing_loop();

my $first = $node->safe_psql('postgres',
	"SELECT jobq.enqueue(\$j\$" . sprintf($swallow, 'first') . "\$j\$, timeout => '0')");
my $second = $node->safe_psql('postgres',
	"SET ROLE storm_other; SELECT jobq.enqueue(\$j\$"
	  . sprintf($swallow, 'second')
	  . "\$j\$, timeout => '0')");
# both are inside the loop that swallows cancels (a cancel that came
# earlier, in the INSERT, would simply cancel the job)
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 2 FROM jobq.workers w JOIN pg_stat_activity a ON a.pid = w.pid
		  WHERE w.job_id IN ($first, $second) AND a.wait_event = 'PgSleep'"),
	'both jobs are running, in their loops');

my $log_offset = -s $node->logfile;

# the storm: every session cancels the first job
my @runs;
foreach my $i (1 .. $callers)
{
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'psql', '-XAtq', '-d', $node->connstr('postgres'),
			'-c', "SELECT jobq.cancel($first)"
		],
		'>', \$out, '2>', \$err);
	push @runs, [ $h, \$out, \$err ];
}
# every caller is in jobq.cancel() (waiting for the worker), or has
# already returned, before the other role asks
sub callers_settled
{
	my $done = grep { !$_->[0]->pumpable } @runs;
	my $waiting = $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT jobq.cancel($first)%'");
	return $done + $waiting >= $callers;
}
my $settled = 0;
foreach (1 .. 1800)
{
	$_->[0]->pump_nb foreach grep { $_->[0]->pumpable } @runs;
	if (callers_settled())
	{
		$settled = 1;
		last;
	}
	usleep(100_000);
}
ok($settled, "$callers sessions are cancelling the first job");
my $other = $node->safe_psql('postgres',
	"SET ROLE storm_other; SET statement_timeout = '180s'; SELECT jobq.cancel($second)");
is($other, 't', "another role's jobq.cancel() returns and cancels its job");

my $returned = 0;
my $said_true = 0;
foreach my $run (@runs)
{
	my ($h, $out, $err) = @$run;
	eval { $h->finish; };
	$returned++ if !$@ && $h->result == 0;
	$said_true++ if $$out =~ /^t$/m;
}
is($returned, $callers, "all $callers calls returned without error");
cmp_ok($said_true, '>=', 1, 'the first job was cancelled by one of them');

is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(state::text, ',' ORDER BY id) FROM jobq.jobs WHERE id IN ($first, $second)"
	),
	'cancelled,cancelled',
	'both jobs ended cancelled');
is($node->safe_psql('postgres', 'SELECT count(*) FROM effects'),
	'0', 'their effects were rolled back');
ok(wait_for_backends($node, 'jobq worker', 2), 'the pool is back at two workers');
# the second job's worker exits after the grace; so does the first's,
# unless a cancel caught the first job between two turns of its loop
my @ended = log_lines_with_severity($node, $log_offset, qr/^LOG$/,
	qr/ended job \d+ by exiting/);
ok((grep { /ended job $second by exiting/ } @ended),
	'the log says the second job\'s worker ended it by exiting');
cmp_ok(scalar(@ended), '<=', 2, 'no other job was ended by exiting');

# and the pool works
my $after = $node->safe_psql('postgres', "SELECT jobq.enqueue('SELECT 1')");
ok(wait_for_job($node, $after), 'a new job runs');

$node->stop;
done_testing();
