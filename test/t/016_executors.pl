# 016_executors.pl
#
# External executors with real processes: the jobq command's "work"
# against a server, and jobq.claim() in a session of its own.
#   - a claim that waits is woken by the commit of a job it may take (the
#     poll is 10 minutes, so nothing else can wake it);
#   - three "jobq work" processes drain 3,000 jobs that each append their
#     id to a file: every id is there, every job succeeded exactly once,
#     and each process ran some;
#   - kill -9 of an executor in the middle of a job: the job runs again
#     once the lease has expired (the workers put it back) and succeeds;
#   - SIGTERM: the job in hand finishes; with a short grace, a job that
#     does not is stopped and handed back with its attempt not counted;
#   - an immediate restart of the server: executors reconnect, and the
#     queue drains;
#   - a job's timeout, and jobq.cancel() seen by a heartbeat, kill the
#     job's process;
#   - --tasks-dir runs the executable named after the task;
#   - "jobq top --once" prints the queues, workers and executors;
#   - bad arguments (empty, huge, not UTF-8) give a one-line error and a
#     non-zero status, never a crash.
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

my $node = new_jobq_node('main', conf => "jobq.poll_interval = '10min'\n");
my $jobq = $node->config_data('--bindir') . '/jobq';
ok(-x $jobq, 'the jobq command is installed in the server\'s bindir');
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
ok(wait_for_backends($node, 'jobq worker', 2), '2 workers');

my $dir = PostgreSQL::Test::Utils::tempdir;
$ENV{PGHOST} = $node->host;
$ENV{PGPORT} = $node->port;
$ENV{PGDATABASE} = 'postgres';

sub sql { return $node->safe_psql('postgres', $_[0]); }

# an executor in the background, its output in a file (a pipe that
# nobody reads while the test polls would fill up and stop it); any left
# when the test ends, even by dying, are killed
my @harnesses;
sub start_work
{
	my ($name, @args) = @_;
	my $h = IPC::Run::start([ $jobq, 'work', '--name', $name, @args ],
		'<', \undef, '>', "$dir/$name.log", '2>&1');
	push @harnesses, $h;
	return $h;
}
END
{
	local $?;
	foreach my $h (@harnesses)
	{
		eval { $h->kill_kill if $h->pumpable; };
	}
}

# what an executor printed
sub out_of
{
	my ($name) = @_;
	return PostgreSQL::Test::Utils::slurp_file("$dir/$name.log");
}

# poll $cond (an SQL boolean) until true, or die after the default timeout
sub wait_until
{
	my ($cond, $what) = @_;
	$node->poll_query_until('postgres', $cond) or die "timed out: $what";
	return 1;
}

# ---------------------------------------------------------------------
# A claim that waits is woken by the enqueuing commit
# ---------------------------------------------------------------------
sql("SELECT jobq.register_task('wake', NULL)");
my $session = $node->background_psql('postgres');
$session->query_until(qr/waiting/, q{
\echo waiting
SELECT 'claimed', task, payload->>'n' FROM jobq.claim(tasks => ARRAY['wake'], wait => '300 s');
});
wait_until(q{SELECT count(*) = 1 FROM pg_stat_activity
              WHERE query LIKE '%jobq.claim(tasks => ARRAY[''wake'']%'
                AND wait_event = 'Extension' AND pid <> pg_backend_pid()},
	'the claim waits');
sql(q{SELECT jobq.enqueue_task('wake', '{"n": 7}')});
my $got = $session->query_until(qr/claimed/, '');
like($got, qr/claimed\|wake\|7/, 'the waiting claim returned the job that was committed');
$session->quit;

# ---------------------------------------------------------------------
# Three executors drain 3,000 jobs
# ---------------------------------------------------------------------
sql("SELECT jobq.register_task('append', NULL)");
my $file = "$dir/ids";
is( system($jobq, 'enqueue', '--task', 'append', '--queue', 'drain', '--count', '3000') >> 8,
	0, 'jobq enqueue --count queued the jobs');
my @w = map {
	start_work("drain-$_", '--queue', 'drain', '--concurrency', '4',
		'--task', "append=echo \$JOBQ_JOB_ID >> $file")
} (1 .. 3);
wait_until(q{SELECT count(*) = 3000 FROM jobq.job_history
              WHERE queue = 'drain' AND state = 'succeeded'}, 'the drain');
$_->signal('TERM') foreach @w;
$_->finish foreach @w;
open my $fh, '<', $file or die "cannot read $file: $!";
my %seen;
$seen{ 0 + $_ }++ while <$fh>;
close $fh;
my @ids = split /\n/, sql("SELECT id FROM jobq.job_history WHERE queue = 'drain'");
is(scalar(grep { !$seen{$_} } @ids), 0, 'every job\'s id is in the file');
is( sql(q{SELECT count(*) FROM jobq.job_history WHERE queue = 'drain' AND state = 'succeeded'
          AND attempts = 1}),
	'3000', 'every job succeeded, in one attempt');
is(sql("SELECT count(*) FROM jobq.job WHERE queue = 'drain'"), '0', 'no job is left');
is( sql(q{SELECT count(*) FROM jobq.executors WHERE executor LIKE 'drain-%' AND jobs_succeeded > 0}),
	'3', 'each of the three executors ran some of the jobs');
like(out_of('drain-1'), qr/\[drain-1\] completed job \d+ in [\d.]+ s/, 'executors log each job');

# ---------------------------------------------------------------------
# kill -9 of an executor in the middle of a job
# ---------------------------------------------------------------------
sql("SELECT jobq.register_task('hold', NULL)");
my $hold = sql(q{SELECT jobq.enqueue_task('hold', '{}')});
my $victim = start_work('victim', '--lease', '2s', '--task',
	qq{hold=if [ "\$JOBQ_ATTEMPT" = 1 ]; then sleep 4; fi; echo '{"attempt": '\$JOBQ_ATTEMPT'}'});
wait_until("SELECT (jobq.status($hold)).state = 'running'", 'the held job runs');
$victim->signal('KILL');
$victim->finish;
my $rescuer = start_work('rescuer', '--task', 'hold=echo "{\"attempt\": $JOBQ_ATTEMPT}"');
ok(wait_for_job($node, $hold), 'the job of the killed executor succeeded after its lease expired');
is(sql("SELECT attempts || ' ' || executor || ' ' || (result->>'attempt') FROM jobq.jobs WHERE id = $hold"),
	'2 rescuer 2', 'in a second attempt, by the other executor');
$rescuer->signal('TERM');
$rescuer->finish;

# ---------------------------------------------------------------------
# SIGTERM: the job in hand finishes; past the grace, one is handed back
# ---------------------------------------------------------------------
sql("SELECT jobq.register_task('nap', NULL)");
my $nap = sql(q{SELECT jobq.enqueue_task('nap', '{"s": 2}')});
my $w = start_work('napper', '--task', 'nap=sleep 2; echo "{\"slept\": 2}"');
wait_until("SELECT (jobq.status($nap)).state = 'running'", 'the nap runs');
$w->signal('TERM');
ok($w->finish, 'the executor exits with status 0 after SIGTERM');
is(sql("SELECT state || ' ' || attempts FROM jobq.jobs WHERE id = $nap"), 'succeeded 1',
	'the job in hand when SIGTERM came finished');
like(out_of('napper'), qr/stopping: no more claims.*completed job $nap .*stopped/s,
	'the executor said it stops, completed the job, and stopped');

my $long = sql(q{SELECT jobq.enqueue_task('nap', '{"s": 600}')});
$w = start_work('impatient', '--grace', '1s', '--kill-after', '1s', '--task', 'nap=exec sleep 600');
wait_until("SELECT (jobq.status($long)).state = 'running'", 'the long nap runs');
$w->signal('TERM');
$w->finish;
is(sql("SELECT state || ' ' || attempts FROM jobq.jobs WHERE id = $long"), 'pending 0',
	'past the grace, the job was handed back with its attempt not counted');
like(out_of('impatient'), qr/did not finish within the grace period.*handed job $long back/s,
	'the executor said so');
sql("SELECT jobq.cancel($long)");

# ---------------------------------------------------------------------
# An immediate restart: executors reconnect and the queue drains
# ---------------------------------------------------------------------
is(system($jobq, 'enqueue', '--task', 'append', '--queue', 'restart', '--count', '200') >> 8,
	0, 'jobs queued for the restart');
@w = map {
	start_work("restart-$_", '--queue', 'restart', '--concurrency', '2',
		'--task', "append=sleep 0.01; echo \$JOBQ_JOB_ID >> $dir/restart")
} (1 .. 2);
wait_until(q{SELECT count(*) > 20 FROM jobq.job_history WHERE queue = 'restart'},
	'some jobs ran before the restart');
$node->stop('immediate');
$node->start;
wait_until(q{SELECT count(*) = 200 FROM jobq.job_history WHERE queue = 'restart' AND state = 'succeeded'},
	'the queue drained after the restart');
pass('after an immediate restart, the executors reconnected and drained the queue');
like(out_of('restart-1') . out_of('restart-2'), qr/connected again|lost the connection|cannot connect/,
	'an executor saw the connection go and come back');
$_->signal('TERM') foreach @w;
$_->finish foreach @w;

# ---------------------------------------------------------------------
# A timeout, and a cancel seen by a heartbeat, kill the job's process
# ---------------------------------------------------------------------
sql("SELECT jobq.register_task('forever', NULL)");
$w = start_work('killer', '--lease', '3s', '--kill-after', '1s', '--concurrency', '2',
	'--task', "forever=echo \$\$ > $dir/pid.\$JOBQ_JOB_ID; exec sleep 600");
my $timed = sql(q{SELECT jobq.enqueue_task('forever', '{}', timeout => '1 s', max_attempts => 1)});
ok(wait_for_job($node, $timed, 'failed'), 'the job that ran past its timeout failed');
like(sql("SELECT last_error FROM jobq.jobs WHERE id = $timed"), qr/timed out after 1 s/,
	'with the timeout as its error');
my $cancelled = sql(q{SELECT jobq.enqueue_task('forever', '{}')});
wait_until("SELECT (jobq.status($cancelled)).state = 'running'", 'the job to cancel runs');
wait_for_file("$dir/pid.$cancelled");
is(sql("SELECT jobq.cancel($cancelled)"), 't', 'jobq.cancel() of the running job');
like(slurp_when_gone("$dir/pid.$timed"), qr/gone/, 'the timed-out job\'s process was killed');
like(slurp_when_gone("$dir/pid.$cancelled"), qr/gone/, 'the cancelled job\'s process was killed');
like(out_of('killer'), qr/job $cancelled was cancelled; stopping it/, 'the heartbeat saw the cancel');
$w->signal('TERM');
$w->finish;

# wait until $file exists and is not empty, or die
sub wait_for_file
{
	my ($file) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (!-s $file)
	{
		die "$file did not appear" if time > $deadline;
		usleep(50_000);
	}
	return 1;
}

# the process whose pid is in $file is gone (within the default timeout)
sub slurp_when_gone
{
	my ($pidfile) = @_;
	my $pid = PostgreSQL::Test::Utils::slurp_file($pidfile);
	chomp $pid;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		return "process $pid gone" unless kill(0, $pid);
		usleep(50_000);
	}
	return "process $pid still alive";
}

# ---------------------------------------------------------------------
# --tasks-dir: the executable named after the task runs
# ---------------------------------------------------------------------
mkdir "$dir/tasks" or die;
PostgreSQL::Test::Utils::append_to_file("$dir/tasks/alpha", "#!/bin/sh\necho '{\"ran\": \"alpha\"}'\n");
PostgreSQL::Test::Utils::append_to_file("$dir/tasks/beta", "#!/bin/sh\ncat\n");
chmod 0755, "$dir/tasks/alpha", "$dir/tasks/beta";
sql("SELECT jobq.register_task('alpha', NULL), jobq.register_task('beta', NULL)");
my $a = sql(q{SELECT jobq.enqueue_task('alpha', '{}')});
my $b = sql(q{SELECT jobq.enqueue_task('beta', '{"echo": "me"}')});
foreach (1 .. 2)
{
	my ($o, $e) = ('', '');
	IPC::Run::run([ $jobq, 'work', '--once', '--name', 'dir', '--tasks-dir', "$dir/tasks" ],
		'>', \$o, '2>', \$e);
	like($o, qr/completed job/, "--once ran a job ($_)");
}
is(sql("SELECT result FROM jobq.jobs WHERE id = $a"), '{"ran": "alpha"}', 'task alpha ran DIR/alpha');
is(sql("SELECT result FROM jobq.jobs WHERE id = $b"), '{"echo": "me"}',
	'task beta ran DIR/beta, which read its payload on stdin');
my ($o, $e) = ('', '');
IPC::Run::run([ $jobq, 'work', '--once', '--name', 'dir', '--tasks-dir', "$dir/tasks" ],
	'>', \$o, '2>', \$e);
is($? >> 8, 3, 'work --once with no job exits with status 3');
like($o, qr/no job to run/, 'and says so');

# ---------------------------------------------------------------------
# jobq top --once
# ---------------------------------------------------------------------
($o, $e) = ('', '');
IPC::Run::run([ $jobq, 'top', '--once' ], '>', \$o, '2>', \$e);
is($? >> 8, 0, 'jobq top --once exits with status 0');
like($o, qr/^QUEUE\s+PENDING\s+SCHEDULED\s+RUNNING/m, 'top prints the queue header');
like($o, qr/^drain\s+0\s+0\s+0/m, 'and the queues');
like($o, qr/^WORKER\s+PID\s+STATE/m, 'the workers');
like($o, qr/^restart-1\s+\S+\s+\d+/m, 'and the executors, with host and pid');

# ---------------------------------------------------------------------
# jobq status, wait, cancel, retry
# ---------------------------------------------------------------------
my $sj = sql(q{SELECT jobq.enqueue('SELECT 41 + 1 AS answer')});
($o, $e) = ('', '');
IPC::Run::run([ $jobq, 'wait', $sj, '--timeout', '60s', '--json' ], '>', \$o, '2>', \$e);
is($? >> 8, 0, 'jobq wait exits with status 0 once the job has finished');
like($o, qr/"state":"succeeded".*"result":\{"answer": 42\}/, 'and prints it as JSON');
# in a paused queue, so that its retry stays pending
sql(q{SELECT jobq.pause('cli')});
my $pj = sql(q{SELECT jobq.enqueue('SELECT 1', queue => 'cli')});
($o, $e) = ('', '');
IPC::Run::run([ $jobq, 'wait', $pj, '--timeout', '0.2s' ], '>', \$o, '2>', \$e);
is($? >> 8, 1, 'jobq wait of a job that does not finish in time exits with status 1');
like($e, qr/did not finish within the timeout/, 'and says so');
like($o, qr/^state\s+pending$/m, 'after printing the job');
($o, $e) = ('', '');
IPC::Run::run([ $jobq, 'cancel', $pj ], '>', \$o, '2>', \$e);
like($o, qr/^state\s+cancelled$/m, 'jobq cancel cancels the job and prints it');
($o, $e) = ('', '');
IPC::Run::run([ $jobq, 'retry', $pj ], '>', \$o, '2>', \$e);
like($o, qr/^state\s+pending$/m, 'jobq retry makes it pending again');
($o, $e) = ('', '');
IPC::Run::run([ $jobq, 'status', '999999' ], '>', \$o, '2>', \$e);
is($? >> 8, 1, 'jobq status of a job that does not exist exits with status 1');
like($e, qr/\Ajobq: error: job 999999 does not exist\n\z/, 'with one line');
sql("SELECT jobq.cancel($pj)");
sql(q{SELECT jobq.resume('cli')});

# ---------------------------------------------------------------------
# Bad arguments: a one-line error and a non-zero status, never a crash
# ---------------------------------------------------------------------
foreach my $case (
	[ 'empty SQL', [ 'enqueue', '' ] ],
	[ 'a huge queue name', [ 'enqueue', '--queue', 'q' x 100_000, 'SELECT 1' ] ],
	[ 'a huge priority', [ 'enqueue', '--priority', '9' x 100_000, 'SELECT 1' ] ],
	[ 'SQL that is not UTF-8', [ 'enqueue', "SELECT '\xff\xfe'" ] ],
	[ 'a payload that is not JSON', [ 'enqueue', '--task', 'alpha', '--payload', '{' ] ],
	[ 'an unknown task', [ 'enqueue', '--task', "\xff" ] ],
	[ 'an empty task name', [ 'work', '--task', '=x' ] ],
	[ 'a huge name', [ 'work', '--name', 'n' x 100_000, '--task', 'a=b' ] ],
	[ 'a bad duration', [ 'work', '--lease', 'soon', '--task', 'a=b' ] ],
	[ 'a job id that is not a number', [ 'status', "1\xff" ] ],
	[ 'a job id out of range', [ 'wait', '99999999999999999999' ] ],
	[ 'an unknown command', [ "\xff" ] ],
	[ 'no argument at all', [] ])
{
	my ($what, $args) = @$case;
	my ($so, $se) = ('', '');
	IPC::Run::run([ $jobq, @$args ], '<', \undef, '>', \$so, '2>', \$se);
	my $status = $?;
	ok($status != 0 && ($status & 127) == 0, "$what: non-zero exit status, no signal");
	like($se, qr/\Ajobq: [^\n]+\n/, "$what: one line that begins with \"jobq: \"")
	  unless @$args == 0;
}

$node->stop;
done_testing();
