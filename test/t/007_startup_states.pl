# 007_startup_states.pl
#
# Proves how jobq behaves at start-up in incomplete setups:
#   (a) jobq.database names a database that does not exist yet: the
#       launcher logs "jobq is waiting for database" exactly once (counted
#       after several seconds) and starts no worker; once the database is
#       created the workers start; with the database but without the
#       extension they idle quietly (no ERROR/FATAL in the log, state
#       idle); after CREATE EXTENSION jobq there, an enqueued job runs.
#   (b) in a server that does not preload jobq, CREATE EXTENSION jobq fails
#       with an error saying jobq must be loaded via
#       "shared_preload_libraries", with a hint; the server stays up and
#       the extension (and its schema) does not exist afterwards.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

# ---------------------------------------------------------------------
# (a) jobq.database does not exist at start
# ---------------------------------------------------------------------
my $node =
  new_jobq_node('late_db', conf => "jobq.database = 'jobq_late'\n");

my $waiting_re = qr/jobq is waiting for database "jobq_late"/;
ok($node->wait_for_log($waiting_re, 0),
	'(a) launcher logs that it waits for the database');
ok(wait_for_backends($node, 'jobq launcher', 1),
	'(a) the launcher runs');

# Several seconds: the launcher looks for the database again and again,
# but says so only once.
$node->safe_psql('postgres', 'SELECT pg_sleep(4)');
my @waiting = grep { /$waiting_re/ } split /\n/, slurp_file($node->logfile);
is(scalar(@waiting), 1, '(a) the waiting message is logged exactly once');
is(count_backends($node, 'jobq worker'),
	'0', '(a) no worker without the database');
is(scalar(log_lines_with_severity($node, 0, qr/^(ERROR|FATAL|PANIC)$/)),
	0, '(a) no errors while waiting for the database');

# Create the database: the workers start, connected to it.
my $offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE jobq_late');
ok(wait_for_backends($node, 'jobq worker', 2, "datname = 'jobq_late'"),
	'(a) workers start once the database exists');

# Without the extension, the workers idle quietly.
$node->safe_psql('postgres', 'SELECT pg_sleep(3.5)');
is(count_backends($node, 'jobq worker', "state = 'idle'"),
	'2', '(a) workers idle in a database without the extension');
my @errors = log_lines_with_severity($node, $offset, qr/^(ERROR|FATAL|PANIC)$/);
is(scalar(@errors), 0, '(a) no errors from workers without the extension')
  or diag join("\n", @errors);
ok(!$node->log_contains($waiting_re, $offset),
	'(a) no new waiting message once the database exists');

# With the extension, jobs run.
$node->safe_psql('jobq_late', 'CREATE EXTENSION jobq');
$node->safe_psql('jobq_late', 'CREATE TABLE t (v int)');
my $id = $node->safe_psql('jobq_late',
	"SELECT jobq.enqueue('INSERT INTO t VALUES (7)')");
ok(wait_for_job($node, $id, 'succeeded', 'jobq_late'),
	'(a) a job runs after CREATE EXTENSION');
is($node->safe_psql('jobq_late', 'SELECT string_agg(v::text, \',\') FROM t'),
	'7', '(a) its effect is there');
@errors = log_lines_with_severity($node, $offset, qr/^(ERROR|FATAL|PANIC)$/);
is(scalar(@errors), 0, '(a) still no errors in the log') or diag join("\n", @errors);

$node->stop;

# ---------------------------------------------------------------------
# (b) a server that does not preload jobq
# ---------------------------------------------------------------------
my $plain = PostgreSQL::Test::Cluster->new('no_preload');
$plain->init;
$plain->start;
my $pm_pid_before = $plain->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'");

my ($ret, $stdout, $stderr) = $plain->psql('postgres', 'CREATE EXTENSION jobq');
isnt($ret, 0, '(b) CREATE EXTENSION jobq fails without preloading');
like(
	$stderr,
	qr/ERROR:.*must be loaded via "shared_preload_libraries"/,
	'(b) the error says jobq must be preloaded');
like($stderr, qr/HINT:\s+\S/, '(b) the error comes with a hint');

# The server is still up, and it did not go through a crash restart.
is($plain->safe_psql('postgres', 'SELECT 1'), '1', '(b) server is still up');
is( $plain->safe_psql(
		'postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"),
	$pm_pid_before,
	'(b) no crash restart');
ok(!$plain->log_contains(qr/terminated by signal|server process .* exited/),
	'(b) no backend died');
is( $plain->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_extension WHERE extname = 'jobq'"),
	'0',
	'(b) extension does not exist afterwards');
is($plain->safe_psql('postgres', "SELECT to_regnamespace('jobq') IS NULL"),
	't', '(b) schema jobq does not exist afterwards');

# A second attempt, in a new session, fails the same way.
($ret, $stdout, $stderr) = $plain->psql('postgres', 'CREATE EXTENSION jobq');
isnt($ret, 0, '(b) a second CREATE EXTENSION jobq fails too');
like(
	$stderr,
	qr/must be loaded via "shared_preload_libraries"/,
	'(b) with the same error');

$plain->stop;
done_testing();
