# 012_install_paths.pl: CREATE EXTENSION jobq (the current version's full
# install script) and every upgrade path (an older version created, then
# ALTER EXTENSION jobq UPDATE) give the same schema.
#
# pg_dump leaves an extension's members out of a dump, except in binary
# upgrade mode, where it writes each of them; that is what is compared,
# without what differs by construction: object OIDs and transaction ids,
# the columns that ALTER TABLE ... DROP COLUMN left behind, and the random
# \restrict keys.
# The contents of the extension's tables that the install or upgrade
# scripts write (the built-in tasks, queue settings) are compared too.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;
use IPC::Run;

my $node = new_jobq_node('main', conf => "jobq.workers = 0\n");

my $current = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'jobq'");
my @older = split /\n/,
  $node->safe_psql(
	'postgres', qq{
	SELECT version FROM pg_available_extension_versions
	 WHERE name = 'jobq' AND version <> '$current'
	 ORDER BY string_to_array(version, '.')::int[]});
ok(scalar(@older) >= 4, 'older versions: ' . join(', ', @older));

# the schema of database $db, as binary-upgrade pg_dump writes it
sub schema_of
{
	my ($db) = @_;
	my ($out, $err);
	my $ok = IPC::Run::run(
		[
			'pg_dump', '--schema-only', '--binary-upgrade',
			'-d', $node->connstr($db)
		],
		'>', \$out, '2>', \$err);
	die "pg_dump of $db failed: $err" unless $ok;
	my @keep;
	foreach my $line (split /\n/, $out)
	{
		next if $line =~ /binary_upgrade_set_next_|pg\.dropped|recreate dropped column/;
		# the rest of a dropped column's pg_attribute fix-up
		next
		  if $line =~ /^UPDATE pg_catalog\.pg_attribute$|^SET attlen = |^  AND attrelid = /;
		next if $line =~ /^\\(un)?restrict /;
		# frozen transaction ids and the OIDs of TOAST tables
		$line =~ s/relfrozenxid = '\d+'/relfrozenxid = 'xid'/;
		$line =~ s/WHERE oid = '\d+'/WHERE oid = 'oid'/;
		# the extension's configuration tables, listed by OID
		$line =~ s/'\{[\d,]+\}'/'{oids}'/ if $line =~ /binary_upgrade_create_empty_extension/;
		push @keep, $line;
	}
	my $text = join("\n", @keep) . "\n";
	# the blank lines around what was left out
	$text =~ s/\n{3,}/\n\n/g;
	return $text;
}

# a unified diff of two schemas, for the test's log
sub schema_diff
{
	my ($a, $b) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	PostgreSQL::Test::Utils::append_to_file("$dir/fresh.sql", $a);
	PostgreSQL::Test::Utils::append_to_file("$dir/upgraded.sql", $b);
	my $diff;
	IPC::Run::run([ 'diff', '-u', "$dir/fresh.sql", "$dir/upgraded.sql" ], '>', \$diff);
	return $diff;
}

my $contents = q{
	SELECT 'task', task || ' ' || fn::text || ' ' || registered_by::text FROM jobq.task
	UNION ALL SELECT 'queue', queue || ' ' || coalesce(concurrency::text, '-') || ' ' || paused::text FROM jobq.queues
	UNION ALL SELECT 'role', role::text FROM jobq.role_limits
	UNION ALL SELECT 'job', count(*)::text FROM jobq.job
	ORDER BY 1, 2};

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION jobq');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'jobq'"),
	$current, "a fresh install is at $current");
my $fresh = schema_of('fresh');
like($fresh, qr/CREATE TABLE jobq\.job \(/, 'the dump holds the extension\'s members');
my $fresh_contents = $node->safe_psql('fresh', $contents);

foreach my $from (@older)
{
	my $db = 'from_' . ($from =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION jobq VERSION '$from'");
	$node->safe_psql($db, 'ALTER EXTENSION jobq UPDATE');
	my $upgraded = schema_of($db);
	ok($upgraded eq $fresh, "the schema upgraded from $from is the fresh install's")
	  or diag(schema_diff($fresh, $upgraded));
	is($node->safe_psql($db, $contents), $fresh_contents,
		"the tables upgraded from $from hold what a fresh install writes");
}

$node->stop;
done_testing();
