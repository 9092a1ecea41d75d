# Copyright: jobq authors
#
# 009_claim_floors.pl: the claim floors (claim.c) never hide a claimable
# job.  Claims start each priority level at a floor that they raise as
# they go; every way a job can appear below a floor must lower it again.
# With one worker, jobs run in claim order (priority, then run_at, then
# id), so a job hidden below its floor would run after a marker enqueued
# later; and with jobq.poll_interval at an hour the safety-net rediscovery
# of the levels never comes to its rescue during the test.
#
# (a) a transaction that enqueued before jobs it commits after: its job's
#     run_at (its start) is older than the jobs run meanwhile;
# (b) a job enqueued with run_at in the past, after the level's floor has
#     moved on;
# (c) a job of a priority level no claim has seen yet;
# (d) claimed jobs a worker leaves unrun: after a slow job it commits and
#     leaves the rest of its claim to others.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $node = new_jobq_node('main',
	conf => "jobq.workers = 1\njobq.poll_interval = '1h'\n");
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
$node->safe_psql('postgres',
	'CREATE TABLE ran (label text, seq bigserial)');
wait_for_backends($node, 'jobq worker', 1)
  or die "jobq worker did not start";

sub enqueue
{
	my ($label, $extra) = @_;
	$extra = defined $extra ? ", $extra" : '';
	return $node->safe_psql('postgres',
		"SELECT jobq.enqueue(\$\$INSERT INTO ran (label) VALUES ('$label')\$\$$extra)"
	);
}

# Enqueue $n jobs labelled "$prefix-<i>" in one transaction; returns nothing.
sub enqueue_many
{
	my ($prefix, $n, $body) = @_;
	$body //= '';
	$node->safe_psql('postgres', qq{
		SELECT count(jobq.enqueue(format(\$\$$body INSERT INTO ran (label) VALUES (%L)\$\$,
		                                 '$prefix-' || i)))
		  FROM generate_series(1, $n) i});
}

# Wait for job $id, then return the order in which the labels matching
# $like ran, as a comma-separated string.
sub order_of
{
	my ($id, $like) = @_;
	ok(wait_for_job($node, $id), "marker job $id succeeded");
	return $node->safe_psql('postgres',
		"SELECT string_agg(label, ',' ORDER BY seq) FROM ran WHERE label LIKE '$like'"
	);
}

###########################################################################
# (a) a late commit: enqueued first, committed after newer jobs ran
###########################################################################
{
	my $late = $node->background_psql('postgres');
	$late->query_safe(
		q{BEGIN; SELECT jobq.enqueue($$INSERT INTO ran (label) VALUES ('a-late')$$)});

	# newer jobs run and move the floor past the open transaction's run_at
	enqueue_many('a-new', 40);
	ok( $node->poll_query_until(
			'postgres', "SELECT count(*) = 40 FROM ran WHERE label LIKE 'a-new-%'"),
		'(a) the newer jobs ran');

	$late->query_safe('COMMIT');
	$late->quit;
	my $marker = enqueue('a-marker');
	is(order_of($marker, 'a-%') =~ s/a-new-\d+,//gr, 'a-late,a-marker',
		'(a) the late-committed job runs before a job enqueued after its commit');
}

###########################################################################
# (b) run_at in the past
###########################################################################
{
	enqueue_many('b-new', 20);
	ok( $node->poll_query_until(
			'postgres', "SELECT count(*) = 20 FROM ran WHERE label LIKE 'b-new-%'"),
		'(b) the newer jobs ran');
	# one transaction: the old one first in claim order, then the marker
	my $ids = $node->safe_psql('postgres', q{
		SELECT jobq.enqueue($$INSERT INTO ran (label) VALUES ('b-old')$$,
		                    run_at => now() - interval '1 day');
		SELECT jobq.enqueue($$INSERT INTO ran (label) VALUES ('b-marker')$$)});
	my ($old, $marker) = split /\n/, $ids;
	is(order_of($marker, 'b-%') =~ s/b-new-\d+,//gr, 'b-old,b-marker',
		'(b) a job due a day ago runs at once, before a later one');
}

###########################################################################
# (c) a priority level no claim has seen
###########################################################################
{
	# a backlog at priority 0 that waits for a gate, so that the worker is
	# in the middle of it (a claim of at most jobq.batch_size jobs in hand)
	# when the new level appears, however slowly the test goes on
	$node->safe_psql('postgres', 'CREATE TABLE gate (open boolean)');
	enqueue_many('c-low', 200, q{DO $g$ BEGIN
		WHILE NOT EXISTS (SELECT 1 FROM public.gate) LOOP PERFORM pg_sleep(0.01); END LOOP;
		END $g$;});
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'jobq worker' AND wait_event = 'PgSleep'"
		),
		'(c) the worker waits at the gate in the backlog');
	my $high = enqueue('c-high', 'priority => 7');
	my $marker = enqueue('c-marker');
	$node->safe_psql('postgres', 'INSERT INTO gate VALUES (true)');
	my $order = order_of($marker, 'c-%');
	my @labels = split /,/, $order;
	my ($pos) = grep { $labels[$_] eq 'c-high' } 0 .. $#labels;
	ok(defined $pos && $pos < 200,
		'(c) the job of a new priority level ran before the backlog of the lower level had drained'
	) or diag("order: $order");
	is($labels[-1], 'c-marker', '(c) the marker ran last');
}

###########################################################################
# (d) claimed jobs left unrun after a slow job
###########################################################################
{
	# many fast jobs grow the worker's claim to jobq.batch_size; a slow job
	# among them ends its chunk early, and the rest of that claim goes back
	$node->safe_psql('postgres', q{
		SELECT count(jobq.enqueue(format($$%s INSERT INTO ran (label) VALUES (%L)$$,
		                                 CASE WHEN i % 50 = 0 THEN 'SELECT pg_sleep(0.05);' ELSE '' END,
		                                 'd-' || lpad(i::text, 3, '0'))))
		  FROM generate_series(1, 300) i});
	my $marker = enqueue('d-zmarker');
	my $order = order_of($marker, 'd-%');
	my @labels = split /,/, $order;
	is(scalar @labels, 301, '(d) every job ran');
	is($labels[-1], 'd-zmarker',
		'(d) jobs left unrun after a slow job ran before a job enqueued after them');
	is_deeply([ @labels[ 0 .. 299 ] ], [ sort @labels[ 0 .. 299 ] ],
		'(d) and in FIFO order');
}

$node->stop;
done_testing();
