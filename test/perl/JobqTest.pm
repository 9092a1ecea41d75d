# JobqTest: helpers shared by the jobq TAP tests (test/t/*.pl).
#
# A test loads it with
#   use FindBin;
#   use lib "$FindBin::RealBin/../perl";
#   use JobqTest;
# and gets every sub below.  Database-wide queries (pg_stat_activity) go
# to the 'postgres' database.
package JobqTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

our @EXPORT = qw(
  jobq_conf new_jobq_node alter_system_reload
  count_backends wait_for_backends worker_pids
  wait_for_job wait_for_job_sleeping
  log_lines_with_severity swallowing_loop
);

# jobq_conf(): the postgresql.conf lines every test server starts from:
# jobq preloaded, 2 workers, a 20 ms retry delay and a 1 s poll.
sub jobq_conf
{
	return qq{shared_preload_libraries = 'jobq'
jobq.workers = 2
jobq.retry_delay = '20ms'
jobq.poll_interval = '1s'
};
}

# new_jobq_node($name, conf => $lines, %init_opts): a new node, initialized
# with %init_opts (e.g. allows_streaming => 1), with jobq_conf() and then
# $lines (optional, newline-terminated) appended to postgresql.conf, and
# started.  The extension is not created.
sub new_jobq_node
{
	my ($name, %opts) = @_;
	my $extra = delete $opts{conf} // '';
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%opts);
	$node->append_conf('postgresql.conf', jobq_conf() . $extra);
	$node->start;
	return $node;
}

# alter_system_reload($node, $setting): ALTER SYSTEM SET $setting (e.g.
# "jobq.workers = 4"), then pg_reload_conf().
sub alter_system_reload
{
	my ($node, $setting) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET $setting; SELECT pg_reload_conf()");
}

# The query counting the backends of $type in pg_stat_activity; $cond, if
# given, is an SQL condition ANDed to the WHERE clause.
sub _backends_sql
{
	my ($type, $cond) = @_;
	my $sql =
	  "SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$type'";
	$sql .= " AND $cond" if defined $cond;
	return $sql;
}

# count_backends($node, $type, $cond): how many backends of $type ('jobq
# worker', 'jobq launcher') matching $cond (optional SQL condition on
# pg_stat_activity) $node has now, as a string.
sub count_backends
{
	my ($node, $type, $cond) = @_;
	return $node->safe_psql('postgres', _backends_sql($type, $cond));
}

# wait_for_backends($node, $type, $n, $cond): poll until $node has exactly
# $n backends of $type matching $cond (optional); true once it has, false
# on timeout.
sub wait_for_backends
{
	my ($node, $type, $n, $cond) = @_;
	return $node->poll_query_until('postgres', _backends_sql($type, $cond),
		$n);
}

# worker_pids($node): the pids of $node's jobq workers, in ascending order.
sub worker_pids
{
	my ($node) = @_;
	my $pids = $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'jobq worker'"
	);
	return split /,/, $pids;
}

# wait_for_job($node, $id, $state, $db): poll until job $id is in $state
# (default 'succeeded'), asking database $db (default 'postgres'); true
# once it is, false on timeout.
sub wait_for_job
{
	my ($node, $id, $state, $db) = @_;
	$state //= 'succeeded';
	$db //= 'postgres';
	return $node->poll_query_until($db,
		"SELECT (jobq.status($id)).state = '$state'");
}

# wait_for_job_sleeping($node, $id, $attempts): poll until job $id is
# running in its attempt number $attempts and its worker waits in
# pg_sleep(); true once it is, false on timeout.
sub wait_for_job_sleeping
{
	my ($node, $id, $attempts) = @_;
	return $node->poll_query_until(
		'postgres', qq{
		SELECT count(*) = 1
		  FROM jobq.jobs j JOIN pg_stat_activity a ON a.pid = j.worker_pid
		 WHERE j.id = $id AND j.state = 'running' AND j.attempts = $attempts
		   AND a.backend_type = 'jobq worker' AND a.wait_event = 'PgSleep'});
}

# log_lines_with_severity($node, $offset, $severity_re, $text_re): the
# lines of $node's server log after byte $offset whose severity (the first
# "LEVEL:  " after the pid, so that statement texts do not count) matches
# $severity_re and, if $text_re is given, whose text matches $text_re.
sub log_lines_with_severity
{
	my ($node, $offset, $severity_re, $text_re) = @_;
	my $log = slurp_file($node->logfile, $offset);
	my @hits;
	foreach my $line (split /\n/, $log)
	{
		next
		  unless $line =~
		  /^\d{4}-\d\d-\d\d \S+ \S+ \[\d+\] .*?(DEBUG\d?|LOG|INFO|NOTICE|WARNING|ERROR|FATAL|PANIC|DETAIL|HINT|CONTEXT|STATEMENT):  /;
		my $sev = $1;
		next unless $sev =~ $severity_re;
		next if defined $text_re && $line !~ $text_re;
		push @hits, $line;
	}
	return @hits;
}

# swallowing_loop(): SQL of a job that runs until its worker ends it: a
# loop that catches query_canceled, so that a cancel or a timeout
# interrupts it and it goes on (only the watchdog's exit ends it).
sub swallowing_loop
{
	return q{DO $do$
	BEGIN
		LOOP
			BEGIN
				PERFORM pg_catalog.pg_sleep(0.05);
			EXCEPTION WHEN query_canceled THEN
				NULL;
			END;
		END LOOP;
	END
	$do$};
}

1;
