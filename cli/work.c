/*-------------------------------------------------------------------------
 *
 * work.c
 *		jobq work: an external executor.  It claims jobs of the tasks it
 *		knows with jobq.claim(), runs a process per job, and reports each
 *		outcome with jobq.complete() or jobq.fail().
 *
 * A job's process gets the payload on stdin and the job's facts in
 * JOBQ_* environment variables.  Exit status 0 completes the job, with
 * what the process printed as the result (JSON if it is JSON, otherwise
 * {"stdout": "..."}); any other status fails the attempt with the tail of
 * what it printed on stderr.  While a job runs, heartbeats keep its lease;
 * a heartbeat that finds the job cancelled, or the job's timeout, stops
 * the process (SIGTERM to its process group, SIGKILL after --kill-after).
 *
 * Two connections: one blocks in jobq.claim(wait => ...) until a job is
 * committed (so an idle executor starts a job as soon as it exists, with
 * no polling), the other carries heartbeats and outcomes.  One loop
 * waits on both, on the processes' output and on signals (a self-pipe).
 * A lost connection is made again with a growing delay; outcomes not yet
 * delivered are kept and delivered then, and count only if the lease
 * still holds (jobq.complete() says so).
 *
 * SIGINT or SIGTERM: no more claims; running jobs get --grace to finish,
 * then are stopped and handed back with jobq.release(), their attempts not
 * counted.  A second signal stops them at once.
 *
 * IDENTIFICATION
 *		cli/work.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "getopt_long.h"

#include "jobq_cli.h"

#define MAX_CONCURRENCY		256
#define MAX_TASKS			256
#define STDOUT_CAP			(1024 * 1024)	/* result kept from stdout */
#define STDERR_TAIL			2000	/* error kept from stderr */
#define CLAIM_WAIT_S		5		/* one claim's wait; then claim again */
#define CTL_TIMEOUT_MS		10000	/* longest heartbeat or outcome statement */
#define CLAIM_SLACK_S		30		/* a claim's longest run past its wait */

/* one task the executor runs, and how */
typedef struct Task
{
	char	   *name;
	char	   *shell;			/* run with sh -c, or */
	char	   *path;			/* exec'd directly (--tasks-dir), or */
	char	  **argv;			/* exec'd with these arguments (--) */
} Task;

typedef enum Outcome
{
	OUT_NONE,
	OUT_COMPLETE,
	OUT_FAIL,
	OUT_RELEASE,
	OUT_DROP					/* nothing to report: cancelled, lease lost */
} Outcome;

/* a claimed job, from its claim to its delivered outcome */
typedef struct Job
{
	bool		used;
	char		id[24];
	char		token[40];
	char	   *task;
	char	   *queue;
	char	   *payload;
	char		attempt[16];
	char		max_attempts[16];
	char		priority[16];
	char	   *run_at;
	char	   *owner;
	double		timeout_s;		/* 0: none */
	double		started;
	double		next_heartbeat;
	double		kill_at;		/* SIGKILL then, once SIGTERM was sent */
	pid_t		pid;			/* 0 once reaped */
	int			out_fd;
	int			err_fd;
	char	   *out;
	size_t		out_len;
	bool		out_truncated;
	char		err[STDERR_TAIL];
	size_t		err_len;		/* bytes in err, a ring once full */
	size_t		err_total;
	int			wstatus;
	bool		exited;
	double		exited_at;
	bool		cancelled;		/* seen by a heartbeat */
	bool		lost;			/* the lease is gone */
	bool		timed_out;
	bool		stopped;		/* stopped by the executor's shutdown */
	Outcome		outcome;		/* to deliver, once decided */
} Job;

static const char *exec_name;
static ConnOpts conn_opts;
static Task tasks[MAX_TASKS];
static int	ntasks;
static const char *queues[MAX_TASKS];
static int	nqueues;
static Job *jobs;
static int	concurrency = 1;
static double lease_s = 30;
static double grace_s = 30;
static double kill_after_s = 5;
static bool once = false;
static double once_wait_s = 0;
static PGconn *claim_conn;		/* blocks in jobq.claim() */
static PGconn *ctl_conn;		/* heartbeats and outcomes */
static bool claim_in_flight = false;
static double claim_deadline = 0;	/* a claim not answered by then is cancelled */
static bool claim_cancelled = false;
static double reconnect_at = 0;
static double reconnect_delay = 0.1;
static int	signal_pipe[2] = {-1, -1};
static volatile sig_atomic_t stop_signals = 0;
static double stop_deadline = 0;
static bool ran_one = false;
static int	exit_status = EXIT_OK;
static bool claimed_none = false;
static bool claim_failed = false;	/* the last claim's result was an error */
static char hostname[256];

static void
logmsg(const char *fmt,...) __attribute__((format(printf, 1, 2)));

/*
 * One line of the executor's log on stdout, "[NAME] message", escaped as
 * a whole (append_escaped()): what a job printed on stderr, a server
 * message or a name cannot end the line early nor act on a terminal, so
 * no job can write a line that looks like the executor's.
 */
static void
logmsg(const char *fmt,...)
{
	va_list		ap;
	PQExpBufferData raw;
	PQExpBufferData line;

	char		msg[8192];
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	initPQExpBuffer(&raw);
	printfPQExpBuffer(&raw, "[%s] %s", exec_name, msg);
	/* a line longer than that (a huge server message) says it was cut */
	if (n < 0 || (size_t) n >= sizeof(msg))
		appendPQExpBufferStr(&raw, "...");
	initPQExpBuffer(&line);
	append_escaped(&line, raw.data, raw.len);
	printf("%s\n", line.data);
	fflush(stdout);
	termPQExpBuffer(&raw);
	termPQExpBuffer(&line);
}

static void
on_signal(int sig)
{
	int			save = errno;
	char		c = (char) sig;

	if (sig == SIGINT || sig == SIGTERM)
		stop_signals++;
	if (write(signal_pipe[1], &c, 1) < 0)
	{
		/* the pipe is full: a wake-up is pending anyway */
	}
	errno = save;
}

static char *
xstrdup(const char *s)
{
	return pg_strdup(s ? s : "");
}

static void
usage(FILE *out)
{
	fprintf(out,
			"Usage:\n"
			"  jobq work [OPTION]... --task NAME=COMMAND [--task NAME=COMMAND]...\n"
			"  jobq work [OPTION]... --tasks-dir DIR\n"
			"  jobq work [OPTION]... --task NAME -- COMMAND [ARG]...\n"
			"\n"
			"Run jobs of external tasks: one process per job, the payload on its stdin,\n"
			"the job in JOBQ_JOB_ID, JOBQ_TASK, JOBQ_QUEUE, JOBQ_ATTEMPT, JOBQ_MAX_ATTEMPTS,\n"
			"JOBQ_PRIORITY, JOBQ_RUN_AT, JOBQ_OWNER.  Exit status 0 completes the job with\n"
			"stdout as its result (JSON, or {\"stdout\": ...}); another fails the attempt with\n"
			"the tail of stderr.  The connecting role needs EXECUTE on jobq.claim() and the\n"
			"other executor functions.\n"
			"\n"
			"Options:\n"
			"  -t, --task=NAME=COMMAND   run task NAME with sh -c COMMAND\n"
			"      --tasks-dir=DIR       run task NAME as the executable DIR/NAME\n"
			"  -q, --queue=QUEUE         claim only from QUEUE (repeatable; default any)\n"
			"  -c, --concurrency=N       jobs run at once (default 1)\n"
			"      --lease=D             lease per job, kept by heartbeats (default 30s)\n"
			"      --name=NAME           this executor's name in jobq.executors (default HOST-PID)\n"
			"      --grace=D             on SIGINT/SIGTERM, time running jobs get (default 30s)\n"
			"      --kill-after=D        SIGKILL this long after SIGTERM (default 5s)\n"
			"      --once                run one job, then exit (status 3 if there was none)\n"
			"      --wait=D              with --once, wait this long for a job (default 0)\n"
			"  -d, -h, -p, -U            connection options, as psql's\n");
}

/* what to claim: the task names, and the queues (NULL: any) */
static char *
pg_array(const char **names, int n)
{
	size_t		cap = 16;
	char	   *buf;
	size_t		len;
	int			i;

	for (i = 0; i < n; i++)
		cap += 2 * strlen(names[i]) + 4;
	buf = malloc(cap);
	if (buf == NULL)
		cli_fatal(EXIT_ERROR, "out of memory");
	strcpy(buf, "{");
	len = 1;
	for (i = 0; i < n; i++)
	{
		const char *p;

		if (i > 0)
			buf[len++] = ',';
		buf[len++] = '"';
		for (p = names[i]; *p; p++)
		{
			if (*p == '"' || *p == '\\')
				buf[len++] = '\\';
			buf[len++] = *p;
		}
		buf[len++] = '"';
	}
	buf[len++] = '}';
	buf[len] = '\0';
	return buf;
}

static const Task *
find_task(const char *name)
{
	int			i;

	for (i = 0; i < ntasks; i++)
		if (strcmp(tasks[i].name, name) == 0)
			return &tasks[i];
	return NULL;
}

/*
 * Why name cannot be a task's name, or NULL if it can: what the server
 * takes is 1 to 63 bytes of text (valid UTF-8, the client encoding), not
 * in the "jobq." namespace.  One name it does not take in a claim's list
 * would fail every claim, forever.
 */
static const char *
bad_task_name(const char *name)
{
	size_t		len = strlen(name);

	if (len == 0 || len > 63)
		return "a task name is 1 to 63 bytes";
	if (!is_valid_utf8(name, len))
		return "a task name is text in UTF-8";
	if (strncmp(name, "jobq.", 5) == 0)
		return "task names that begin with \"jobq.\" belong to the jobq extension";
	return NULL;
}

/*
 * The executables of DIR, each a task of its name.  A file whose name
 * cannot be a task's is skipped with a warning: it is no task, and the
 * others are served.
 */
static void
load_tasks_dir(const char *dir)
{
	DIR		   *d = opendir(dir);
	struct dirent *e;

	if (d == NULL)
		cli_fatal(EXIT_ERROR, "could not open tasks directory \"%s\": %m", dir);
	while ((e = readdir(d)) != NULL)
	{
		char		path[MAXPGPATH];
		struct stat st;
		const char *why;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || access(path, X_OK) != 0)
			continue;
		if ((why = bad_task_name(e->d_name)) != NULL)
		{
			cli_warning("skipping \"%s\" in tasks directory \"%s\": %s",
						e->d_name, dir, why);
			continue;
		}
		if (ntasks >= MAX_TASKS)
			cli_fatal(EXIT_USAGE, "too many tasks (at most %d)", MAX_TASKS);
		tasks[ntasks].name = xstrdup(e->d_name);
		tasks[ntasks].path = xstrdup(path);
		ntasks++;
	}
	closedir(d);
	if (ntasks == 0)
		cli_fatal(EXIT_ERROR, "tasks directory \"%s\" has no executable files named as tasks", dir);
}

static void
close_conn(PGconn **conn)
{
	if (*conn)
		PQfinish(*conn);
	*conn = NULL;
	if (conn == &claim_conn)
		claim_in_flight = false;
}

/* both connections, made again after a delay that grows while they fail */
static bool
ensure_connected(void)
{
	double		now = now_seconds();
	char		appname[128];

	if (claim_conn && PQstatus(claim_conn) != CONNECTION_OK)
		close_conn(&claim_conn);
	if (ctl_conn && PQstatus(ctl_conn) != CONNECTION_OK)
		close_conn(&ctl_conn);
	if (claim_conn && ctl_conn)
		return true;
	if (now < reconnect_at)
		return false;
	snprintf(appname, sizeof(appname), "jobq work %s", exec_name);
	if (ctl_conn == NULL)
		ctl_conn = cli_connect(&conn_opts, appname, true);
	if (ctl_conn && claim_conn == NULL)
		claim_conn = cli_connect(&conn_opts, appname, true);
	if (claim_conn && ctl_conn)
	{
		if (reconnect_delay > 0.1)
			logmsg("connected again");
		reconnect_delay = 0.1;
		return true;
	}
	logmsg("cannot connect; trying again in %.1f s", reconnect_delay);
	reconnect_at = now + reconnect_delay;
	reconnect_delay = reconnect_delay * 2 > 10 ? 10 : reconnect_delay * 2;
	return false;
}

static int
running_jobs(void)
{
	int			i;
	int			n = 0;

	for (i = 0; i < concurrency; i++)
		if (jobs[i].used)
			n++;
	return n;
}

static void
free_job(Job *j)
{
	if (j->out_fd >= 0)
		close(j->out_fd);
	if (j->err_fd >= 0)
		close(j->err_fd);
	free(j->task);
	free(j->queue);
	free(j->payload);
	free(j->run_at);
	free(j->owner);
	free(j->out);
	memset(j, 0, sizeof(*j));
	j->out_fd = j->err_fd = -1;
}

/* the environment and the descriptors of a job's process; never returns */
static void
exec_job(const Job *j, const Task *t, int in_fd, int out_fd, int err_fd)
{
	setpgid(0, 0);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		_exit(126);
	close(in_fd);
	close(out_fd);
	close(err_fd);
	setenv("JOBQ_JOB_ID", j->id, 1);
	setenv("JOBQ_TASK", j->task, 1);
	setenv("JOBQ_QUEUE", j->queue, 1);
	setenv("JOBQ_ATTEMPT", j->attempt, 1);
	setenv("JOBQ_MAX_ATTEMPTS", j->max_attempts, 1);
	setenv("JOBQ_PRIORITY", j->priority, 1);
	setenv("JOBQ_RUN_AT", j->run_at, 1);
	setenv("JOBQ_OWNER", j->owner, 1);
	setenv("JOBQ_EXECUTOR", exec_name, 1);
	if (t->shell)
		execl("/bin/sh", "sh", "-c", t->shell, (char *) NULL);
	else if (t->path)
		execl(t->path, t->path, (char *) NULL);
	else
		execvp(t->argv[0], t->argv);
	fprintf(stderr, "could not run task \"%s\": %s\n", t->name, strerror(errno));
	_exit(127);
}

/* start the process of a claimed job; false (and an outcome) if it cannot */
static bool
start_job(Job *j)
{
	const Task *t = find_task(j->task);
	char		tmpl[] = "/tmp/jobq-payload-XXXXXX";
	int			in_fd;
	int			out_pipe[2];
	int			err_pipe[2];
	size_t		left = strlen(j->payload);
	const char *p = j->payload;
	pid_t		pid;

	j->started = now_seconds();
	j->next_heartbeat = j->started + lease_s / 3;
	if (t == NULL)
	{
		/* claimed by name, so this cannot happen; hand it back */
		j->outcome = OUT_RELEASE;
		return false;
	}
	/* the payload from a file: the process reads it at its own pace */
	in_fd = mkstemp(tmpl);
	if (in_fd < 0)
	{
		logmsg("cannot create a payload file: %s", strerror(errno));
		j->outcome = OUT_RELEASE;
		return false;
	}
	unlink(tmpl);
	while (left > 0)
	{
		ssize_t		w = write(in_fd, p, left);

		if (w <= 0)
		{
			logmsg("cannot write the payload file: %s", strerror(errno));
			close(in_fd);
			j->outcome = OUT_RELEASE;
			return false;
		}
		p += w;
		left -= w;
	}
	lseek(in_fd, 0, SEEK_SET);
	if (pipe(out_pipe) != 0)
	{
		logmsg("cannot create a pipe: %s", strerror(errno));
		close(in_fd);
		j->outcome = OUT_RELEASE;
		return false;
	}
	if (pipe(err_pipe) != 0)
	{
		logmsg("cannot create a pipe: %s", strerror(errno));
		close(in_fd);
		close(out_pipe[0]);
		close(out_pipe[1]);
		j->outcome = OUT_RELEASE;
		return false;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0)
	{
		logmsg("cannot start a process: %s", strerror(errno));
		close(in_fd);
		close(out_pipe[0]);
		close(out_pipe[1]);
		close(err_pipe[0]);
		close(err_pipe[1]);
		j->outcome = OUT_RELEASE;
		return false;
	}
	if (pid == 0)
	{
		close(out_pipe[0]);
		close(err_pipe[0]);
		close(signal_pipe[0]);
		close(signal_pipe[1]);
		exec_job(j, t, in_fd, out_pipe[1], err_pipe[1]);
	}
	setpgid(pid, pid);
	close(in_fd);
	close(out_pipe[1]);
	close(err_pipe[1]);
	fcntl(out_pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(err_pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(out_pipe[0], F_SETFD, FD_CLOEXEC);
	fcntl(err_pipe[0], F_SETFD, FD_CLOEXEC);
	j->pid = pid;
	j->out_fd = out_pipe[0];
	j->err_fd = err_pipe[0];
	logmsg("started job %s (%s, attempt %s)", j->id, j->task, j->attempt);
	return true;
}

/* stop a job's process: SIGTERM now, SIGKILL after --kill-after */
static void
stop_process(Job *j)
{
	if (j->pid <= 0 || j->exited || j->kill_at > 0)
		return;
	kill(-j->pid, SIGTERM);
	j->kill_at = now_seconds() + kill_after_s;
}

/* the claim, sent without waiting for its result */
static void
send_claim(int n, double wait_s)
{
	char		ntext[16];
	char		lease[32];
	char		wait[32];
	char		pid[16];
	const char **names = malloc(sizeof(char *) * ntasks);
	char	   *task_array;
	char	   *queue_array = NULL;
	const char *params[8];
	int			i;

	if (names == NULL)
		cli_fatal(EXIT_ERROR, "out of memory");
	for (i = 0; i < ntasks; i++)
		names[i] = tasks[i].name;
	task_array = pg_array(names, ntasks);
	if (nqueues > 0)
		queue_array = pg_array(queues, nqueues);
	snprintf(ntext, sizeof(ntext), "%d", n);
	snprintf(lease, sizeof(lease), "%.3f", lease_s);
	snprintf(wait, sizeof(wait), "%.3f", wait_s);
	snprintf(pid, sizeof(pid), "%d", (int) getpid());
	params[0] = task_array;
	params[1] = queue_array;
	params[2] = ntext;
	params[3] = lease;
	params[4] = exec_name;
	params[5] = wait;
	params[6] = hostname;
	params[7] = pid;
	if (!PQsendQueryParams(claim_conn,
						   "SELECT id, token, task, payload::text, queue, priority, attempt,"
						   "       max_attempts, COALESCE(EXTRACT(epoch FROM timeout), 0),"
						   "       run_at, owner::text"
						   "  FROM (SELECT c.*, c.lease_token::text AS token"
						   "          FROM jobq.claim($1::text[], $2::text[], $3::integer,"
						   "                          pg_catalog.make_interval(secs => $4::float8), $5,"
						   "                          pg_catalog.make_interval(secs => $6::float8),"
						   "                          $7, $8::integer) c) s",
						   8, NULL, params, NULL, NULL, 0))
	{
		logmsg("cannot send a claim: %s", cli_result_message(NULL, claim_conn));
		close_conn(&claim_conn);
	}
	else
	{
		claim_in_flight = true;
		claim_cancelled = false;
		claim_deadline = now_seconds() + wait_s + CLAIM_SLACK_S;
	}
	free(names);
	free(task_array);
	free(queue_array);
}

/* the rows of a claim's result: jobs to start (or to hand back) */
static void
take_claimed(PGresult *res)
{
	int			r;

	for (r = 0; r < PQntuples(res); r++)
	{
		Job		   *j = NULL;
		int			i;

		for (i = 0; i < concurrency; i++)
			if (!jobs[i].used)
			{
				j = &jobs[i];
				break;
			}
		if (j == NULL)
		{
			/* more than asked for cannot happen; keep it safe anyway */
			logmsg("no room for claimed job %s", PQgetvalue(res, r, 0));
			continue;
		}
		free_job(j);
		j->used = true;
		snprintf(j->id, sizeof(j->id), "%s", PQgetvalue(res, r, 0));
		snprintf(j->token, sizeof(j->token), "%s", PQgetvalue(res, r, 1));
		j->task = xstrdup(PQgetvalue(res, r, 2));
		j->payload = xstrdup(PQgetvalue(res, r, 3));
		j->queue = xstrdup(PQgetvalue(res, r, 4));
		snprintf(j->priority, sizeof(j->priority), "%s", PQgetvalue(res, r, 5));
		snprintf(j->attempt, sizeof(j->attempt), "%s", PQgetvalue(res, r, 6));
		snprintf(j->max_attempts, sizeof(j->max_attempts), "%s", PQgetvalue(res, r, 7));
		j->timeout_s = atof(PQgetvalue(res, r, 8));
		j->run_at = xstrdup(PQgetvalue(res, r, 9));
		j->owner = xstrdup(PQgetvalue(res, r, 10));
		ran_one = true;
		if (stop_signals > 0)
		{
			j->outcome = OUT_RELEASE;
			continue;
		}
		if (!start_job(j))
			reconnect_at = now_seconds() + 1;	/* not at once into the same failure */
	}
}

/* read what a job's process printed */
static void
read_output(Job *j, bool err)
{
	char		buf[8192];
	int		   *fd = err ? &j->err_fd : &j->out_fd;

	for (;;)
	{
		ssize_t		n = read(*fd, buf, sizeof(buf));

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0)
		{
			close(*fd);
			*fd = -1;
			return;
		}
		if (err)
		{
			ssize_t		k;

			/* keep the tail: a ring of STDERR_TAIL bytes */
			for (k = 0; k < n; k++)
				j->err[(j->err_total + k) % STDERR_TAIL] = buf[k];
			j->err_total += n;
			j->err_len = j->err_total < STDERR_TAIL ? j->err_total : STDERR_TAIL;
		}
		else
		{
			size_t		take = n;

			if (j->out_len + take > STDOUT_CAP)
			{
				take = STDOUT_CAP - j->out_len;
				j->out_truncated = true;
			}
			if (take > 0)
			{
				j->out = realloc(j->out, j->out_len + take + 1);
				if (j->out == NULL)
					cli_fatal(EXIT_ERROR, "out of memory");
				memcpy(j->out + j->out_len, buf, take);
				j->out_len += take;
				j->out[j->out_len] = '\0';
			}
		}
	}
}

/* the tail of stderr, in order, valid UTF-8, without trailing blanks */
static char *
stderr_tail(const Job *j)
{
	char		ordered[STDERR_TAIL];
	size_t		start = j->err_total > STDERR_TAIL ? j->err_total % STDERR_TAIL : 0;
	size_t		k;
	char	   *s;
	size_t		len;

	for (k = 0; k < j->err_len; k++)
		ordered[k] = j->err[(start + k) % STDERR_TAIL];
	s = valid_utf8(ordered, j->err_len);
	len = strlen(s);
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == ' ' || s[len - 1] == '\r'))
		s[--len] = '\0';
	return s;
}

/* decide what to report for a job whose process has ended */
static void
decide_outcome(Job *j)
{
	if (j->cancelled || j->lost)
		j->outcome = OUT_DROP;
	else if (!j->timed_out && WIFEXITED(j->wstatus) && WEXITSTATUS(j->wstatus) == 0)
		j->outcome = OUT_COMPLETE;	/* even if it was asked to stop */
	else if (j->stopped)
		j->outcome = OUT_RELEASE;
	else
		j->outcome = OUT_FAIL;
}

/* a statement on the control connection; NULL if the connection failed */
static PGresult *
ctl_exec(const char *sql, int n, const char *const *params)
{
	PGresult   *res;

	if (ctl_conn == NULL)
		return NULL;
	res = cli_exec_bounded(ctl_conn, sql, n, params, CTL_TIMEOUT_MS);
	if (res == NULL || PQstatus(ctl_conn) != CONNECTION_OK)
	{
		PQclear(res);
		close_conn(&ctl_conn);
		return NULL;
	}
	return res;
}

/*
 * An error worth trying again: the connection, a lock held elsewhere
 * (55P03: the lease calls wait at most lock_timeout, 500 ms when it is 0),
 * a deadlock or serialization failure, a lack of resources, a shutdown,
 * a statement cancelled (57014: past CTL_TIMEOUT_MS, cli_exec_bounded()).
 */
static bool
transient(const PGresult *res)
{
	const char *st = cli_sqlstate(res);

	return strncmp(st, "08", 2) == 0 || strncmp(st, "40", 2) == 0 ||
		strncmp(st, "53", 2) == 0 || strncmp(st, "57P", 3) == 0 ||
		strcmp(st, "55P03") == 0 || strcmp(st, "57014") == 0;
}

/*
 * Report a decided outcome; false if it must wait (for a connection, or
 * a transient error).  The job's slot is free afterwards.
 */
static bool
deliver(Job *j)
{
	const char *params[4];
	PGresult   *res = NULL;
	double		took = now_seconds() - j->started;
	char	   *error = NULL;
	char	   *result = NULL;

	params[0] = j->id;
	params[1] = j->token;
	switch (j->outcome)
	{
		case OUT_NONE:
			return false;
		case OUT_DROP:
			break;
		case OUT_RELEASE:
			res = ctl_exec("SELECT jobq.release($1::bigint, $2::uuid)", 2, params);
			if (res == NULL)
				return false;
			if (PQresultStatus(res) != PGRES_TUPLES_OK && transient(res))
			{
				PQclear(res);
				return false;
			}
			if (PQresultStatus(res) == PGRES_TUPLES_OK)
				logmsg("handed job %s back", j->id);
			else
				logmsg("could not hand job %s back: %s", j->id, cli_result_message(res, ctl_conn));
			break;
		case OUT_COMPLETE:
			result = valid_utf8(j->out ? j->out : "", j->out_len);
			params[2] = result[0] ? result : NULL;
			/* the result as JSON if it is JSON, else what was printed */
			res = ctl_exec("SELECT jobq.complete($1::bigint, $2::uuid, $3::jsonb)", 3, params);
			if (res && PQresultStatus(res) != PGRES_TUPLES_OK &&
				strncmp(cli_sqlstate(res), "22", 2) == 0)
			{
				PQclear(res);
				res = ctl_exec("SELECT jobq.complete($1::bigint, $2::uuid,"
							   " pg_catalog.jsonb_build_object('stdout', $3::text))", 3, params);
			}
			if (res == NULL || (PQresultStatus(res) != PGRES_TUPLES_OK && transient(res)))
			{
				PQclear(res);
				free(result);
				return false;
			}
			if (PQresultStatus(res) == PGRES_TUPLES_OK)
				logmsg("completed job %s in %.2f s%s", j->id, took,
					   j->out_truncated ? " (output truncated)" : "");
			else
				logmsg("job %s finished, but its result does not count: %s", j->id,
					   cli_result_message(res, ctl_conn));
			break;
		case OUT_FAIL:
			if (j->timed_out)
				error = strdup("");
			else
				error = stderr_tail(j);
			{
				char		reason[128];
				char	   *full;

				if (j->timed_out)
					snprintf(reason, sizeof(reason), "timed out after %g s", j->timeout_s);
				else if (WIFEXITED(j->wstatus))
					snprintf(reason, sizeof(reason), "exit status %d", WEXITSTATUS(j->wstatus));
				else if (WIFSIGNALED(j->wstatus))
					snprintf(reason, sizeof(reason), "killed by signal %d", WTERMSIG(j->wstatus));
				else
					snprintf(reason, sizeof(reason), "ended");
				full = malloc(strlen(error) + strlen(reason) + 4);
				if (full == NULL)
					cli_fatal(EXIT_ERROR, "out of memory");
				if (error[0])
					sprintf(full, "%s: %s", reason, error);
				else
					strcpy(full, reason);
				free(error);
				error = full;
			}
			params[2] = error;
			res = ctl_exec("SELECT jobq.fail($1::bigint, $2::uuid, $3)", 3, params);
			if (res == NULL || (PQresultStatus(res) != PGRES_TUPLES_OK && transient(res)))
			{
				PQclear(res);
				free(error);
				return false;
			}
			if (PQresultStatus(res) == PGRES_TUPLES_OK)
				logmsg("failed job %s in %.2f s (%s): %.200s", j->id, took,
					   strcmp(PQgetvalue(res, 0, 0), "failed") == 0 ?
					   "no attempt left" : "will retry", error);
			else
				logmsg("job %s failed, but its outcome does not count: %s", j->id,
					   cli_result_message(res, ctl_conn));
			break;
	}
	PQclear(res);
	free(error);
	free(result);
	free_job(j);
	return true;
}

/* heartbeats due: extend leases; a cancelled or lost job is stopped */
static void
heartbeats(double now)
{
	int			i;
	char		extend[32];

	snprintf(extend, sizeof(extend), "%.3f", lease_s);
	for (i = 0; i < concurrency; i++)
	{
		Job		   *j = &jobs[i];
		const char *params[3];
		PGresult   *res;

		if (!j->used || j->pid <= 0 || j->exited || j->outcome != OUT_NONE ||
			j->cancelled || j->lost || now < j->next_heartbeat)
			continue;
		params[0] = j->id;
		params[1] = j->token;
		params[2] = extend;
		res = ctl_exec("SELECT jobq.heartbeat($1::bigint, $2::uuid,"
					   " pg_catalog.make_interval(secs => $3::float8))", 3, params);
		if (res == NULL)
			return;				/* the connection is gone; retried later */
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
		{
			if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
			{
				logmsg("job %s was cancelled; stopping it", j->id);
				j->cancelled = true;
				stop_process(j);
			}
		}
		else if (strcmp(cli_sqlstate(res), "JQ001") == 0)
		{
			logmsg("lost the lease of job %s; stopping it: %s", j->id,
				   cli_result_message(res, ctl_conn));
			j->lost = true;
			stop_process(j);
		}
		else
			logmsg("heartbeat of job %s failed: %s", j->id, cli_result_message(res, ctl_conn));
		PQclear(res);
		j->next_heartbeat = now + lease_s / 3;
	}
}

static void
reap_children(void)
{
	for (;;)
	{
		int			wstatus;
		pid_t		pid = waitpid(-1, &wstatus, WNOHANG);
		int			i;

		if (pid <= 0)
			return;
		for (i = 0; i < concurrency; i++)
			if (jobs[i].used && jobs[i].pid == pid)
			{
				jobs[i].exited = true;
				jobs[i].exited_at = now_seconds();
				jobs[i].wstatus = wstatus;
			}
	}
}

/* what runs into limits of time: job timeouts, SIGKILLs, the shutdown */
static void
check_times(double now)
{
	int			i;

	for (i = 0; i < concurrency; i++)
	{
		Job		   *j = &jobs[i];

		if (!j->used || j->pid <= 0 || j->exited)
			continue;
		if (j->kill_at > 0 && now >= j->kill_at)
		{
			kill(-j->pid, SIGKILL);
			j->kill_at = now + 3600;
		}
		if (j->timeout_s > 0 && !j->timed_out && now >= j->started + j->timeout_s)
		{
			logmsg("job %s ran past its timeout of %g s; stopping it", j->id, j->timeout_s);
			j->timed_out = true;
			stop_process(j);
		}
		if (stop_deadline > 0 && now >= stop_deadline && !j->stopped)
		{
			logmsg("job %s did not finish within the grace period; stopping it", j->id);
			j->stopped = true;
			stop_process(j);
		}
	}
}

static int
parse_args(int argc, char **argv)
{
	static struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"task", required_argument, NULL, 't'},
		{"tasks-dir", required_argument, NULL, 1},
		{"queue", required_argument, NULL, 'q'},
		{"concurrency", required_argument, NULL, 'c'},
		{"lease", required_argument, NULL, 2},
		{"name", required_argument, NULL, 3},
		{"grace", required_argument, NULL, 4},
		{"kill-after", required_argument, NULL, 5},
		{"once", no_argument, NULL, 6},
		{"wait", required_argument, NULL, 7},
		{"help", no_argument, NULL, 1000},
		{NULL, 0, NULL, 0}
	};
	const char *tasks_dir = NULL;
	const char *bare_task = NULL;	/* --task NAME, its command after -- */
	int			c;
	long		v;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+" CONN_SHORT_OPTIONS "t:q:c:", long_options, NULL)) != -1)
	{
		if (conn_option(&conn_opts, c, optarg))
			continue;
		switch (c)
		{
			case 't':
				{
					char	   *eq = strchr(optarg, '=');
					size_t		len = eq ? (size_t) (eq - optarg) : strlen(optarg);
					const char *why;

					if (ntasks >= MAX_TASKS)
						cli_fatal(EXIT_USAGE, "too many tasks (at most %d)", MAX_TASKS);
					tasks[ntasks].name = pnstrdup(optarg, len);
					if ((why = bad_task_name(tasks[ntasks].name)) != NULL)
						cli_fatal(EXIT_USAGE, "invalid task \"%s\": %s", optarg, why);
					if (eq)
					{
						if (eq[1] == '\0')
							cli_fatal(EXIT_USAGE, "task \"%s\" has an empty command", tasks[ntasks].name);
						tasks[ntasks].shell = xstrdup(eq + 1);
					}
					else
					{
						if (bare_task)
							cli_fatal(EXIT_USAGE, "only one --task NAME may take its command after --");
						bare_task = tasks[ntasks].name;
					}
					ntasks++;
					break;
				}
			case 1:
				tasks_dir = optarg;
				break;
			case 'q':
				if (nqueues >= MAX_TASKS)
					cli_fatal(EXIT_USAGE, "too many queues (at most %d)", MAX_TASKS);
				if (optarg[0] == '\0' || strlen(optarg) > 63 ||
					!is_valid_utf8(optarg, strlen(optarg)))
					cli_fatal(EXIT_USAGE, "invalid queue \"%s\": a queue name is 1 to 63 bytes of UTF-8", optarg);
				queues[nqueues++] = optarg;
				break;
			case 'c':
				if (!parse_int(optarg, 1, MAX_CONCURRENCY, &v))
					cli_fatal(EXIT_USAGE, "concurrency must be a whole number from 1 to %d, not \"%s\"",
							  MAX_CONCURRENCY, optarg);
				concurrency = (int) v;
				break;
			case 2:
				if (!parse_duration(optarg, &lease_s) || lease_s < 1)
					cli_fatal(EXIT_USAGE, "invalid lease \"%s\": at least 1 s, at most 7 days", optarg);
				break;
			case 3:
				if (optarg[0] == '\0' || strlen(optarg) > 63 ||
					!is_valid_utf8(optarg, strlen(optarg)))
					cli_fatal(EXIT_USAGE, "invalid name \"%s\": 1 to 63 bytes of UTF-8", optarg);
				exec_name = optarg;
				break;
			case 4:
				if (!parse_duration(optarg, &grace_s))
					cli_fatal(EXIT_USAGE, "invalid grace period \"%s\"", optarg);
				break;
			case 5:
				if (!parse_duration(optarg, &kill_after_s))
					cli_fatal(EXIT_USAGE, "invalid --kill-after \"%s\"", optarg);
				break;
			case 6:
				once = true;
				break;
			case 7:
				if (!parse_duration(optarg, &once_wait_s))
					cli_fatal(EXIT_USAGE, "invalid wait \"%s\"", optarg);
				break;
			case 1000:
				usage(stdout);
				exit(EXIT_OK);
			default:
				fprintf(stderr, "Try \"jobq work --help\".\n");
				exit(EXIT_USAGE);
		}
	}
	if (bare_task)
	{
		Task	   *t;
		int			k;

		if (optind >= argc)
			cli_fatal(EXIT_USAGE, "task \"%s\" needs its command after --", bare_task);
		for (t = tasks; strcmp(t->name, bare_task) != 0; t++)
			;
		t->argv = calloc(argc - optind + 1, sizeof(char *));
		if (t->argv == NULL)
			cli_fatal(EXIT_ERROR, "out of memory");
		for (k = optind; k < argc; k++)
			t->argv[k - optind] = argv[k];
	}
	else if (optind < argc)
		cli_fatal(EXIT_USAGE, "unexpected argument \"%s\"; try \"jobq work --help\"", argv[optind]);
	if (tasks_dir)
		load_tasks_dir(tasks_dir);
	if (ntasks == 0)
		cli_fatal(EXIT_USAGE, "no task to run: give --task NAME=COMMAND, --tasks-dir DIR or --task NAME -- COMMAND");
	for (c = 0; c < ntasks; c++)
	{
		int			k;

		for (k = 0; k < c; k++)
			if (strcmp(tasks[k].name, tasks[c].name) == 0)
				cli_fatal(EXIT_USAGE, "task \"%s\" is given twice", tasks[c].name);
	}
	if (once)
		concurrency = 1;
	return 0;
}

int
cmd_work(int argc, char **argv)
{
	static char default_name[320];
	struct sigaction sa;
	int			i;

	parse_args(argc, argv);
	if (gethostname(hostname, sizeof(hostname)) != 0)
		strcpy(hostname, "localhost");
	hostname[63] = '\0';
	if (exec_name == NULL)
	{
		snprintf(default_name, sizeof(default_name), "%.40s-%d", hostname, (int) getpid());
		exec_name = default_name;
	}
	jobs = calloc(concurrency, sizeof(Job));
	if (jobs == NULL)
		cli_fatal(EXIT_ERROR, "out of memory");
	for (i = 0; i < concurrency; i++)
		jobs[i].out_fd = jobs[i].err_fd = -1;

	if (pipe(signal_pipe) != 0)
		cli_fatal(EXIT_ERROR, "cannot create a pipe: %s", strerror(errno));
	fcntl(signal_pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(signal_pipe[1], F_SETFL, O_NONBLOCK);
	fcntl(signal_pipe[0], F_SETFD, FD_CLOEXEC);
	fcntl(signal_pipe[1], F_SETFD, FD_CLOEXEC);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* the first connection must work: a wrong setting is an error */
	ctl_conn = cli_connect(&conn_opts, "jobq work", false);
	logmsg("ready: %d task%s, concurrency %d, lease %g s", ntasks, ntasks == 1 ? "" : "s",
		   concurrency, lease_s);

	for (;;)
	{
		struct pollfd fds[2 + 2 * MAX_CONCURRENCY];
		int			nfds = 0;
		double		now = now_seconds();
		double		next = now + 1.0;
		int			timeout_ms;
		int			busy;

		/* a stop was asked for */
		if (stop_signals > 0 && stop_deadline == 0)
		{
			logmsg("stopping: no more claims; running jobs get %g s", grace_s);
			stop_deadline = now + grace_s;
			if (claim_in_flight && claim_conn)
				cli_cancel(claim_conn);
		}
		if (stop_signals > 1 && stop_deadline > now)
			stop_deadline = now;
		/* a claim cancelled at the stop that does not come back: drop it */
		if (stop_deadline > 0 && now > stop_deadline + 2 && claim_in_flight)
			close_conn(&claim_conn);
		/* a claim that runs past its wait: cancelled, then given up */
		if (claim_in_flight && claim_conn && now >= claim_deadline)
		{
			if (!claim_cancelled)
			{
				logmsg("the claim runs past its wait; cancelling it");
				cli_cancel(claim_conn);
				claim_cancelled = true;
				claim_deadline = now + CANCEL_WAIT_MS / 1000.0;
			}
			else
			{
				logmsg("the claim did not end when cancelled; connecting again");
				close_conn(&claim_conn);
			}
		}

		ensure_connected();

		/* outcomes, then heartbeats and limits of time */
		for (i = 0; i < concurrency; i++)
		{
			Job		   *j = &jobs[i];

			/*
			 * The process has ended: its output is complete once both pipes
			 * are closed, or a second later (what it left running in the
			 * background may hold them open: it is stopped with the group).
			 */
			if (j->used && j->outcome == OUT_NONE && j->exited &&
				(j->out_fd >= 0 || j->err_fd >= 0) && now > j->exited_at + 1)
			{
				kill(-j->pid, SIGKILL);
				if (j->out_fd >= 0)
					read_output(j, false);
				if (j->err_fd >= 0)
					read_output(j, true);
				if (j->out_fd >= 0)
					close(j->out_fd);
				if (j->err_fd >= 0)
					close(j->err_fd);
				j->out_fd = j->err_fd = -1;
			}
			if (j->used && j->outcome == OUT_NONE && j->exited &&
				j->out_fd < 0 && j->err_fd < 0)
				decide_outcome(j);
			if (j->used && j->outcome != OUT_NONE)
				(void) deliver(j);
		}
		heartbeats(now);
		check_times(now);

		/* stopping, and the server is out of reach: leases will expire */
		if (stop_deadline > 0 && now > stop_deadline + kill_after_s + 10 && ctl_conn == NULL)
			for (i = 0; i < concurrency; i++)
				if (jobs[i].used && jobs[i].outcome != OUT_NONE)
				{
					logmsg("cannot report job %s: the server is out of reach; its lease will expire",
						   jobs[i].id);
					free_job(&jobs[i]);
				}

		busy = running_jobs();
		if (stop_signals > 0 || (once && (ran_one || claimed_none)))
		{
			if (busy == 0 && !claim_in_flight)
				break;
		}
		else if (!claim_in_flight && claim_conn && busy < concurrency &&
				 now >= reconnect_at)
			send_claim(concurrency - busy, once ? once_wait_s : CLAIM_WAIT_S);

		/* wait for the claim, the processes' output, or a signal */
		fds[nfds].fd = signal_pipe[0];
		fds[nfds++].events = POLLIN;
		if (claim_in_flight && claim_conn)
		{
			fds[nfds].fd = PQsocket(claim_conn);
			fds[nfds++].events = POLLIN;
		}
		for (i = 0; i < concurrency; i++)
		{
			Job		   *j = &jobs[i];

			if (!j->used)
				continue;
			if (j->out_fd >= 0)
			{
				fds[nfds].fd = j->out_fd;
				fds[nfds++].events = POLLIN;
			}
			if (j->err_fd >= 0)
			{
				fds[nfds].fd = j->err_fd;
				fds[nfds++].events = POLLIN;
			}
			if (j->pid > 0 && !j->exited)
			{
				if (j->next_heartbeat < next)
					next = j->next_heartbeat;
				if (j->kill_at > 0 && j->kill_at < next)
					next = j->kill_at;
				if (j->timeout_s > 0 && !j->timed_out && j->started + j->timeout_s < next)
					next = j->started + j->timeout_s;
			}
			if (j->outcome != OUT_NONE)
				next = now + 0.2;	/* waiting for a connection */
			if (j->exited && j->outcome == OUT_NONE && j->exited_at + 1.01 < next)
				next = j->exited_at + 1.01;
		}
		if (stop_deadline > 0 && stop_deadline < next)
			next = stop_deadline;
		if (reconnect_at > now && reconnect_at < next)
			next = reconnect_at;
		if (claim_in_flight && claim_deadline < next)
			next = claim_deadline;
		timeout_ms = (int) ((next - now) * 1000) + 1;
		if (timeout_ms < 1)
			timeout_ms = 1;
		if (poll(fds, nfds, timeout_ms) < 0 && errno != EINTR)
			cli_fatal(EXIT_ERROR, "poll failed: %s", strerror(errno));

		/* signals */
		{
			char		buf[64];

			while (read(signal_pipe[0], buf, sizeof(buf)) > 0)
				;
		}
		reap_children();

		/* the claim's result */
		if (claim_in_flight && claim_conn)
		{
			if (!PQconsumeInput(claim_conn))
			{
				logmsg("lost the connection: %s", cli_result_message(NULL, claim_conn));
				close_conn(&claim_conn);
			}
			else if (!PQisBusy(claim_conn))
			{
				PGresult   *res;
				int			got = 0;

				while ((res = PQgetResult(claim_conn)) != NULL)
				{
					if (PQresultStatus(res) == PGRES_TUPLES_OK)
					{
						got += PQntuples(res);
						take_claimed(res);
					}
					else if (strncmp(cli_sqlstate(res), "42", 2) == 0 ||
							 strncmp(cli_sqlstate(res), "22", 2) == 0)
					{
						/*
						 * No privilege, no such function, an argument the
						 * server does not take: the same claim would fail
						 * the same way, forever.
						 */
						logmsg("claim failed: %s; stopping", cli_result_message(res, claim_conn));
						exit_status = EXIT_ERROR;
						claim_failed = true;
						stop_signals = 2;
					}
					else if (strcmp(cli_sqlstate(res), "57014") != 0 || stop_signals == 0)
					{
						logmsg("claim failed: %s", cli_result_message(res, claim_conn));
						claim_failed = true;
						/* not at full speed into the same error */
						reconnect_at = now_seconds() + 1;
						if (PQstatus(claim_conn) != CONNECTION_OK)
							close_conn(&claim_conn);
					}
					PQclear(res);
				}
				claim_in_flight = false;
				/* --once: a claim that failed is tried again, not "no job" */
				if (once && got == 0 && !claim_failed)
					claimed_none = true;
				claim_failed = false;
				if (!claim_conn || PQstatus(claim_conn) != CONNECTION_OK)
					close_conn(&claim_conn);
			}
		}

		/* output */
		for (i = 0; i < concurrency; i++)
		{
			Job		   *j = &jobs[i];

			if (!j->used)
				continue;
			if (j->out_fd >= 0)
				read_output(j, false);
			if (j->err_fd >= 0)
				read_output(j, true);
		}
	}

	close_conn(&claim_conn);
	close_conn(&ctl_conn);
	if (once && !ran_one && exit_status == EXIT_OK)
	{
		logmsg("no job to run");
		return EXIT_NOTHING;
	}
	logmsg("stopped");
	return exit_status;
}
