# 019_cli_output.pl
#
# What the jobq command shows a person is safe to show, and one bad file
# name does not stop "jobq work --tasks-dir":
#   - a queue name with a terminal escape reaches "jobq top --once" escaped
#     (no ESC byte in the output, "\x1B" instead);
#   - a job whose stderr holds newlines and escapes: the executor's log
#     has its error on one line, escaped, and no forged line;
#   - "jobq status" escapes the job's fields; "--json" stays valid JSON
#     with the same values;
#   - an error message that echoes a name (the server's, or the command's
#     own) has it escaped;
#   - --tasks-dir: a file whose name is not UTF-8, or is too long for a
#     task name, is skipped with a warning, and the other tasks are served;
#   - a --task name that is not UTF-8 is a usage error at once;
#   - passwords as psql asks for them: -W prompts before connecting, a
#     server that wants a password gets one asked for, -w never asks, and
#     "jobq work -W" keeps the password for its second connection.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest;

my $node = new_jobq_node('main');
my $jobq = $node->config_data('--bindir') . '/jobq';
$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
my $dir = PostgreSQL::Test::Utils::tempdir;
$ENV{PGHOST} = $node->host;
$ENV{PGPORT} = $node->port;
$ENV{PGDATABASE} = 'postgres';

sub sql { return $node->safe_psql('postgres', $_[0]); }

# run the jobq command; (exit status, stdout, stderr)
sub run_jobq
{
	my ($o, $e) = ('', '');
	IPC::Run::run([ $jobq, @_ ], '<', \undef, '>', \$o, '2>', \$e);
	return ($? >> 8, $o, $e);
}

# no byte that could act on a terminal: C0 controls but newline, DEL, and
# the C1 controls as UTF-8 (U+0080 to U+009F)
sub no_controls
{
	my ($text, $what) = @_;
	ok($text !~ /[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]/, "$what: no control characters");
}

# external tasks may soon need an allowance for the role that runs them:
# given when the server has the function
sub allow_executor
{
	my ($task, $role) = @_;
	$role //= sql('SELECT current_user');
	sql(qq{SELECT jobq.allow_executor('$task', '$role')});
}

# ---------------------------------------------------------------------
# jobq top --once: a queue name with escapes
# ---------------------------------------------------------------------
sql("SELECT jobq.register_task('evil', NULL)");
allow_executor('evil');
sql(q{SELECT jobq.enqueue_task('evil', '{}', queue => E'q\x1b[2J\u009b\x07')});
my ($st, $o, $e) = run_jobq('top', '--once');
is($st, 0, 'jobq top --once exits with status 0');
no_controls($o, 'top');
like($o, qr/^q\\x1B\[2J\\u009B\\x07 /m, 'the queue name is shown escaped');

# ---------------------------------------------------------------------
# jobq work: a job's stderr cannot forge log lines
# ---------------------------------------------------------------------
my $script = "$dir/forge.sh";
PostgreSQL::Test::Utils::append_to_file($script, <<'EOS');
#!/bin/sh
printf 'oops\n[forger] completed job 424242 in 0.01 s\n\033[31mred\r\n' >&2
exit 3
EOS
chmod 0755, $script;
my $forged = sql(q{SELECT jobq.enqueue_task('evil', '{}', queue => 'forge', max_attempts => 1)});
($st, $o, $e) = run_jobq('work', '--once', '--name', 'forger', '--queue', 'forge', '--task', "evil=$script");
is($st, 0, 'work --once ran the job');
no_controls($o =~ s/\n//gr, 'work log');
my @lines = split /\n/, $o;
is(scalar(grep { /^\[forger\] completed job 424242/ } @lines), 0, 'no forged log line');
ok((grep { /^\[forger\] failed job $forged .*oops\\n\[forger\] completed job 424242 in 0\.01 s\\n\\x1B\[31mred/ } @lines),
	'the error is on one line, escaped') or diag($o);

# ---------------------------------------------------------------------
# jobq status: text escaped, JSON valid and the same
# ---------------------------------------------------------------------
($st, $o, $e) = run_jobq('status', $forged);
is($st, 0, 'jobq status exits with status 0');
no_controls($o =~ s/\n//gr, 'status');
like($o, qr/^last_error\s+exit status 3: oops\\n\[forger\] completed job 424242/m,
	'the error is escaped in the text output');
($st, $o, $e) = run_jobq('status', $forged, '--json');
no_controls($o =~ s/\n\z//r, 'status --json');
my $job = eval { decode_json($o) };
ok($job, 'status --json is valid JSON') or diag($@);
is($job->{last_error}, sql("SELECT last_error FROM jobq.jobs WHERE id = $forged"),
	'with the error as it is');
my $c1 = sql(q{SELECT jobq.enqueue('SELECT 1', queue => E'c1\u009b\u202e\x7f')});
($st, $o, $e) = run_jobq('status', $c1, '--json');
no_controls($o =~ s/\n\z//r, 'status --json of a queue with C1 controls and DEL');
$job = eval { decode_json($o) };
is($job && $job->{queue}, "c1\x{9b}\x{202e}\x7f", 'whose name decodes as it is');
sql("SELECT jobq.cancel($c1)");

# ---------------------------------------------------------------------
# Error messages that echo names
# ---------------------------------------------------------------------
($st, $o, $e) = run_jobq('enqueue', '--task', "no\x1b[2Jsuch");
is($st, 1, 'an unknown task: status 1');
no_controls($e =~ s/\n//gr, 'the server\'s error');
like($e, qr/no\\x1B\[2Jsuch/, 'names the task escaped');
($st, $o, $e) = run_jobq("cmd\x1b]0;x\x07\n");
no_controls($e =~ s/\n//gr, 'an unknown command');
like($e, qr/\Ajobq: error: unknown command "cmd\\x1B\]0;x\\x07\\n"\n/, 'is named escaped');
($st, $o, $e) = run_jobq('work', '--task', "bad\xffname=true");
is($st, 2, 'a --task name that is not UTF-8 is a usage error');
like($e, qr/invalid task "bad\\xFFname=true": a task name is text in UTF-8/, 'escaped');

# ---------------------------------------------------------------------
# --tasks-dir: names that cannot be tasks are skipped with a warning
# ---------------------------------------------------------------------
mkdir "$dir/tasks" or die;
my $long = 'l' x 70;
foreach my $name ("bad\xff\xfename", $long, 'jobq.builtin', 'good')
{
	PostgreSQL::Test::Utils::append_to_file("$dir/tasks/$name", "#!/bin/sh\necho '{\"ran\": true}'\n");
	chmod 0755, "$dir/tasks/$name";
}
sql("SELECT jobq.register_task('good', NULL)");
allow_executor('good');
my $good = sql(q{SELECT jobq.enqueue_task('good', '{}')});
($st, $o, $e) = run_jobq('work', '--once', '--wait', '5s', '--name', 'dir', '--tasks-dir', "$dir/tasks");
is($st, 0, 'work --once --tasks-dir ran a job despite the bad names');
like($o, qr/completed job $good/, 'the job of the good task');
like($e, qr/warning: skipping "bad\\xFF\\xFEname" in tasks directory .*: a task name is text in UTF-8/,
	'the name that is not UTF-8 was skipped with a warning');
like($e, qr/warning: skipping "$long" .*: a task name is 1 to 63 bytes/,
	'the name too long was skipped with a warning');
like($e, qr/warning: skipping "jobq\.builtin" .*belong to the jobq extension/,
	'the reserved name was skipped with a warning');
is(sql("SELECT state || ' ' || result FROM jobq.jobs WHERE id = $good"), 'succeeded {"ran": true}',
	'the job succeeded');
($st, $o, $e) = run_jobq('work', '--once', '--name', 'dir', '--tasks-dir', "$dir/tasks");
is($st, 3, 'with no job left, --once exits with status 3');
like($o, qr/no job to run/, 'and says so');


# ---------------------------------------------------------------------
# -W/--password and -w/--no-password
# ---------------------------------------------------------------------
# a role that must give a password on the socket; the command runs in a
# session of its own (setsid), without a terminal, so the prompt reads
# the password from stdin, as simple_prompt() does then
sql(q{CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD 'secret'});
my $hba = PostgreSQL::Test::Utils::slurp_file($node->data_dir . '/pg_hba.conf');
open my $hf, '>', $node->data_dir . '/pg_hba.conf' or die;
print $hf "local all pwuser scram-sha-256\n", $hba;
close $hf;
$node->reload;
$ENV{PGPASSFILE} = "$dir/no-pgpass";
delete $ENV{PGPASSWORD};

# run the jobq command with $input on stdin, without a terminal
sub run_jobq_input
{
	my ($input, @args) = @_;
	my ($o, $e) = ('', '');
	IPC::Run::run([ 'setsid', '-w', $jobq, @args ], '<', \$input, '>', \$o, '2>', \$e);
	return ($? >> 8, $o, $e);
}

($st, $o, $e) = run_jobq_input("secret\n", 'enqueue', '-U', 'pwuser', '-W', 'SELECT 1');
is($st, 0, '-W: the password typed at the prompt is used');
like($e, qr/Password for user pwuser: /, 'after the prompt');
my $pwjob = $o =~ s/\s+//gr;
($st, $o, $e) = run_jobq_input("secret\n", 'status', $pwjob, '-U', 'pwuser');
is($st, 0, 'without -W, the password is asked for once the server wants one');
like($e, qr/Password for user pwuser: /, 'with the prompt');
like($o, qr/^id\s+$pwjob$/m, 'and the command did its work');
($st, $o, $e) = run_jobq_input("secret\n", 'status', $pwjob, '-U', 'pwuser', '-w');
is($st, 1, '-w: no prompt, and the connection fails');
unlike($e, qr/Password/, 'without a prompt');
like($e, qr/\Ajobq: error: could not connect: .*no password supplied/, 'saying why');
($st, $o, $e) = run_jobq_input("wrong\n", 'status', $pwjob, '-U', 'pwuser', '-W');
is($st, 1, 'a wrong password: status 1');
like($e, qr/password authentication failed/, 'saying why');

sql("SELECT jobq.register_task('pw', NULL)");
allow_executor('pw', 'pwuser');
my $pwtask = sql(q{SELECT jobq.enqueue_task('pw', '{}', queue => 'pw')});
($st, $o, $e) = run_jobq_input("secret\n", 'work', '--once', '--wait', '5s', '--queue', 'pw',
	'-U', 'pwuser', '-W', '--task', 'pw=echo "{\"pw\": 1}"');
is($st, 0, 'jobq work -W: both of its connections use the password typed once');
like($o, qr/completed job $pwtask/, 'and it ran the job');
is(() = $e =~ /Password for user/g, 1, 'asked once');

$node->stop;
done_testing();
