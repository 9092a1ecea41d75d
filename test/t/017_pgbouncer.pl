# 017_pgbouncer.pl
#
# Executors through PgBouncer in transaction pooling.  A client's session
# there is a run of transactions on whichever server connection is free,
# so what a client SETs for its session stays on the server connection
# and reaches the next client that gets it.  "jobq work" must leave no
# such state:
#   - two "jobq work" executors connected through PgBouncer wait in their
#     claims (claim-and-wait works there: a claim is one statement outside
#     a transaction block), then drain 300 jobs committed at once, each
#     job's effect exactly once;
#   - afterwards, plain clients through the same PgBouncer, each holding
#     its own server connection (a transaction open, so that together they
#     see every server connection of the pool), find statement_timeout and
#     lock_timeout at their defaults.
# Skipped when pgbouncer is not installed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $pgbouncer;
foreach my $d (split(/:/, $ENV{PATH}), '/usr/sbin', '/usr/bin', '/usr/local/bin')
{
	if (-x "$d/pgbouncer")
	{
		$pgbouncer = "$d/pgbouncer";
		last;
	}
}
plan skip_all => 'pgbouncer is not installed (the Debian package "pgbouncer")'
  unless defined $pgbouncer;

# the pool: small, so that the executors' four connections share it
my $pool_size = 5;

my $node = new_jobq_node('main');
my $jobq = $node->config_data('--bindir') . '/jobq';
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
my $dir = PostgreSQL::Test::Utils::tempdir;
my $user = $node->safe_psql('postgres', 'SELECT current_user');
my $defaults = $node->safe_psql('postgres',
	q{SELECT current_setting('statement_timeout') || ' ' || current_setting('lock_timeout')});

# ---------------------------------------------------------------------
# PgBouncer, in transaction pooling, on a socket beside the server's
# ---------------------------------------------------------------------
my $bport = PostgreSQL::Test::Cluster::get_free_port();
my $host = $node->host;
my $port = $node->port;
PostgreSQL::Test::Utils::append_to_file("$dir/userlist.txt", qq{"$user" ""\n});
PostgreSQL::Test::Utils::append_to_file(
	"$dir/pgbouncer.ini", qq{[databases]
* = host=$host port=$port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir = $host
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $pool_size
min_pool_size = 0
max_client_conn = 100
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
});
my $bouncer = IPC::Run::start([ $pgbouncer, "$dir/pgbouncer.ini" ],
	'<', \undef, '>', "$dir/pgbouncer.out", '2>&1');
my @harnesses = ($bouncer);
END
{
	local $?;
	foreach my $h (@harnesses)
	{
		eval { $h->kill_kill if $h->pumpable; };
	}
}

# a node object that is PgBouncer's address: its psql goes through it (it
# is never initialized nor started)
my $via = PostgreSQL::Test::Cluster->new('pgbouncer', port => $bport);
my $up = 0;
foreach (1 .. 100)
{
	my ($ret) = $via->psql('postgres', 'SELECT 1');
	if ($ret == 0)
	{
		$up = 1;
		last;
	}
	select(undef, undef, undef, 0.1);
}
ok($up, 'PgBouncer accepts connections') or BAIL_OUT('pgbouncer did not start');

# ---------------------------------------------------------------------
# Two executors through PgBouncer drain 300 jobs, claiming with a wait
# ---------------------------------------------------------------------
$node->safe_psql('postgres', "SELECT jobq.register_task('append', NULL)");
# the executors' role runs it (it registered it too, so this only says so)
$node->safe_psql('postgres', "SELECT jobq.allow_executor('append', '$user')");

$ENV{PGHOST} = $host;
$ENV{PGPORT} = $bport;
$ENV{PGDATABASE} = 'postgres';
my $file = "$dir/ids";
my @w;
foreach my $i (1 .. 2)
{
	my $h = IPC::Run::start(
		[
			$jobq, 'work', '--name', "bouncer-$i", '--queue', 'pooled',
			'--concurrency', '3', '--task', "append=echo \$JOBQ_JOB_ID >> $file"
		],
		'<', \undef, '>', "$dir/bouncer-$i.log", '2>&1');
	push @harnesses, $h;
	push @w, $h;
}
# both wait in a claim, on the server, before there is any job
$node->poll_query_until(
	'postgres', q{SELECT count(*) = 2 FROM pg_stat_activity
	               WHERE query LIKE '%jobq.claim(%' AND state = 'active'
	                 AND wait_event = 'Extension'})
  or die 'the executors did not wait in their claims';
pass('both executors wait in a claim through PgBouncer');

# 300 jobs committed at once, queued through PgBouncer as well
is( system($jobq, 'enqueue', '--task', 'append', '--queue', 'pooled', '--count', '300') >> 8,
	0, 'jobq enqueue through PgBouncer');
$node->poll_query_until('postgres',
	q{SELECT count(*) = 300 FROM jobq.job_history WHERE queue = 'pooled' AND state = 'succeeded'})
  or die 'the executors did not drain the queue';
$_->signal('TERM') foreach @w;
$_->finish foreach @w;

open my $fh, '<', $file or die "cannot read $file: $!";
my %seen;
$seen{ 0 + $_ }++ while <$fh>;
close $fh;
my @ids = split /\n/,
  $node->safe_psql('postgres', "SELECT id FROM jobq.job_history WHERE queue = 'pooled'");
is(scalar(@ids), 300, '300 jobs finished');
is(scalar(grep { ($seen{$_} // 0) != 1 } @ids), 0, 'each job\'s effect is there exactly once');
is(scalar(keys %seen), 300, 'and nothing else');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM jobq.job_history WHERE queue = 'pooled' AND state = 'succeeded' AND attempts = 1}),
	'300', 'every job succeeded in one attempt');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM jobq.executors WHERE executor LIKE 'bouncer-%' AND jobs_succeeded > 0}),
	'2', 'both executors ran jobs');
my $logs = PostgreSQL::Test::Utils::slurp_file("$dir/bouncer-1.log")
  . PostgreSQL::Test::Utils::slurp_file("$dir/bouncer-2.log");
unlike($logs, qr/claim failed|cannot connect|lost the connection/, 'without an error');

# ---------------------------------------------------------------------
# Nothing leaked to another client
# ---------------------------------------------------------------------
# as many clients as the pool has server connections, each in an open
# transaction: each has a server connection of its own, and together
# they have all the executors used
my @clients;
my @seen_settings;
my %backends;
foreach my $i (1 .. $pool_size)
{
	my $c = $via->background_psql('postgres', on_error_stop => 1);
	$c->query_safe('BEGIN');
	my $got = $c->query_safe(
		q{SELECT pg_backend_pid() || ' ' || current_setting('statement_timeout') || ' '
		         || current_setting('lock_timeout')});
	chomp $got;
	my ($pid, $settings) = split / /, $got, 2;
	$backends{$pid} = 1;
	push @seen_settings, $settings;
	push @clients, $c;
}
is(scalar(keys %backends), $pool_size, "$pool_size clients in transactions had $pool_size server connections");
is(scalar(grep { $_ ne $defaults } @seen_settings), 0,
	"statement_timeout and lock_timeout at their defaults ($defaults) on every one")
  or diag(join("\n", @seen_settings));
foreach my $c (@clients)
{
	$c->query_safe('COMMIT');
	$c->quit;
}
# and a plain client, as an application would
is( $via->safe_psql('postgres', 'SHOW statement_timeout') . ' '
	  . $via->safe_psql('postgres', 'SHOW lock_timeout'),
	$defaults, 'a plain client through PgBouncer sees the defaults');

$bouncer->signal('INT');
$bouncer->finish;
$node->stop;
done_testing();
