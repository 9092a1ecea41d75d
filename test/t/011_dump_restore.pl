# 011_dump_restore.pl: pg_dump of a database with jobq, restored into a
# fresh cluster that preloads jobq, keeps every job, queue setting, role
# limit and registered task, and the restored jobs run.
#
# The source database holds, at the moment of the dump:
#   - jobs that finished: succeeded (SQL and a task) and failed;
#   - a job scheduled an hour ahead;
#   - jobs of a paused queue, and one that depends on a running job;
#   - a job running while pg_dump reads the tables (it waits for an
#     advisory lock the test holds): the dump has it pending, and its
#     effect, not yet committed, is not in the dump;
#   - two configured queues, a per-role limit, a task registered by an
#     unprivileged role.
# The restore goes into a cluster started with jobq.workers = 0, so that the
# restored tables can be compared with the source as they were dumped;
# then the pool starts, the running-at-dump job runs there once, the
# paused queue resumes and its jobs run, and a new job gets an id past
# every restored one.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $src = new_jobq_node('source');
$src->safe_psql(
	'postgres', q{
CREATE EXTENSION jobq;
CREATE ROLE alice LOGIN;
GRANT USAGE ON SCHEMA jobq TO alice;
CREATE TABLE effects (tag text, owner text DEFAULT current_user);
GRANT INSERT, SELECT ON effects TO alice;
CREATE FUNCTION public.stamp(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ INSERT INTO public.effects (tag) VALUES (p->>'tag') RETURNING jsonb_build_object('done', tag) $$;
ALTER FUNCTION public.stamp(jsonb) OWNER TO alice;
SET ROLE alice;
SELECT jobq.register_task('stamp', 'public.stamp(jsonb)');
RESET ROLE;
SELECT jobq.configure_queue('reports', concurrency => 2);
SELECT jobq.pause('held');
SELECT jobq.configure_role('alice', max_pending => 100, max_running => 1);
});

# finished jobs
my $ok = $src->safe_psql('postgres', "SELECT jobq.enqueue('SELECT 1 AS one')");
my $bad = $src->safe_psql('postgres',
	"SELECT jobq.enqueue('SELECT 1/0', max_attempts => 1)");
my $task = $src->safe_psql('postgres',
	q{SET ROLE alice; SELECT jobq.enqueue_task('stamp', '{"tag": "task-before-dump"}')});
ok(wait_for_job($src, $ok), 'SQL job succeeded');
ok(wait_for_job($src, $bad, 'failed'), 'failing job failed');
ok(wait_for_job($src, $task), 'task job succeeded');

# a job that runs while the dump is taken: it waits for lock 4242
my $blocker = $src->background_psql('postgres');
$blocker->query_safe('SELECT pg_advisory_lock(4242)');
my $running = $src->safe_psql('postgres',
	q{SELECT jobq.enqueue($$SELECT pg_advisory_lock(4242); INSERT INTO effects (tag) VALUES ('running-at-dump')$$)});
ok( $src->poll_query_until(
		'postgres',
		"SELECT state = 'running' FROM jobq.jobs WHERE id = $running"),
	'job running at dump time');

# jobs that stay pending: scheduled, in a paused queue, waiting for the
# running job
$src->safe_psql(
	'postgres', q{
SELECT jobq.enqueue($$INSERT INTO effects (tag) VALUES ('scheduled')$$,
                    run_at => now() + interval '1 hour', priority => 5);
SELECT jobq.enqueue($$INSERT INTO effects (tag) VALUES ('held-1')$$, queue => 'held');
SET ROLE alice;
SELECT jobq.enqueue_task('stamp', '{"tag": "held-2"}', queue => 'held',
                         dedup_key => 'k1');
});
$src->safe_psql('postgres',
	"SELECT jobq.enqueue(\$\$INSERT INTO effects (tag) VALUES ('after-running')\$\$, depends_on => ARRAY[$running])"
);

# what the restore must give back
my %q = (
	job => q{SELECT id, queue, priority, run_at, attempts, max_attempts, timeout,
	                owner, command, task, payload, dedup_key, depends_on,
	                not_before, last_error, counted
	           FROM jobq.job ORDER BY id},
	history => q{SELECT id, queue, state, attempts, owner, command, task, payload,
	                    result, last_error, last_sqlstate, finished_at
	               FROM jobq.job_history ORDER BY id},
	queues => 'SELECT queue, concurrency, paused FROM jobq.queues ORDER BY queue',
	tasks => 'SELECT task, fn, registered_by FROM jobq.task ORDER BY task',
	roles => 'SELECT role, max_pending, max_running FROM jobq.role_limits ORDER BY role',
	effects => 'SELECT tag, owner FROM effects ORDER BY tag');
my %before = map { $_ => $src->safe_psql('postgres', $q{$_}) } keys %q;
my $max_id = $src->safe_psql('postgres',
	'SELECT greatest((SELECT max(id) FROM jobq.job), (SELECT max(id) FROM jobq.job_history))'
);
like($before{job}, qr/running-at-dump/, 'the running job is in jobq.job');
like($before{queues}, qr/held\|\|t/, 'the paused queue is configured');

my $dump = PostgreSQL::Test::Utils::tempdir() . '/app.dump';
my $globals = PostgreSQL::Test::Utils::tempdir() . '/globals.sql';
$src->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $src->connstr('postgres') ],
	'pg_dump');
$src->command_ok(
	[ 'pg_dumpall', '--globals-only', '-f', $globals, '-d', $src->connstr('postgres') ],
	'pg_dumpall --globals-only');

# the running job finishes in the source once the lock goes
$blocker->query_safe('SELECT pg_advisory_unlock(4242)');
$blocker->quit;
ok(wait_for_job($src, $running), 'the running job finished in the source');

# restore into a fresh cluster whose pool is empty
my $dst = new_jobq_node('restored', conf => "jobq.workers = 0\n");
# the roles (the bootstrap superuser's CREATE ROLE fails harmlessly)
$dst->run_log([ 'psql', '-X', '-q', '-d', $dst->connstr('postgres'), '-f', $globals ]);
$dst->command_ok(
	[
		'pg_restore', '--exit-on-error', '--single-transaction',
		'-d', $dst->connstr('postgres'), $dump
	],
	'pg_restore succeeds');

foreach my $k (sort keys %q)
{
	is($dst->safe_psql('postgres', $q{$k}), $before{$k}, "$k restored as dumped");
}
ok( $dst->safe_psql('postgres', "SELECT last_value >= $max_id FROM jobq.job_id_seq")
	  eq 't',
	'the id sequence is past every restored job');

# the pool starts: the running-at-dump job and its dependent run, once
alter_system_reload($dst, 'jobq.workers = 2');
ok(wait_for_job($dst, $running), 'the job that was running at dump time runs after the restore');
my $after = $dst->safe_psql('postgres',
	q{SELECT jobq.enqueue($$INSERT INTO effects (tag) VALUES ('new')$$)});
ok($after > $max_id, 'a new job gets an id past the restored ones');
ok(wait_for_job($dst, $after), 'a new job runs');
$dst->safe_psql('postgres', "SELECT jobq.resume('held')");
ok( $dst->poll_query_until(
		'postgres',
		q{SELECT count(*) = 0 FROM jobq.job WHERE queue = 'held' OR command LIKE '%after-running%'}),
	'the paused queue\'s jobs and the dependent job ran after resume');
is( $dst->safe_psql('postgres', q{SELECT string_agg(tag || ':' || owner, ',' ORDER BY tag) FROM effects}),
	'after-running:postgres,held-1:postgres,held-2:alice,new:postgres,running-at-dump:postgres,task-before-dump:alice',
	'every restored job ran once, as its owner; the scheduled one waits');
is($dst->safe_psql('postgres', q{SELECT count(*) FROM jobq.job WHERE command LIKE '%scheduled%'}),
	'1', 'the scheduled job is still scheduled');

$src->stop;
$dst->stop;
done_testing();
