/*-------------------------------------------------------------------------
 *
 * work_child.c
 *		jobq work: a job's process, from its start to its end.
 *
 * A job's process gets the payload on stdin (from an unlinked file, read
 * at its own pace) and the job's facts in JOBQ_* environment variables,
 * in a process group of its own, so that stopping it (SIGTERM, then
 * SIGKILL after --kill-after) stops what it started too.  Its stdout is
 * kept (up to STDOUT_CAP) as the result, the tail of its stderr as the
 * error.
 *
 * IDENTIFICATION
 *		cli/work_child.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <fcntl.h>
#include <sys/wait.h>

#include "work.h"

int
running_jobs(void)
{
	int			i;
	int			n = 0;

	for (i = 0; i < concurrency; i++)
		if (jobs[i].used)
			n++;
	return n;
}

void
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
	fprintf(stderr, "could not run task \"%s\": %m\n", t->name);
	_exit(127);
}

/*
 * The payload in an unlinked file, read from its start: the process reads
 * it at its own pace (a pipe would hold the executor up while it does
 * not).  -1, said in the log, if it cannot be made.
 */
static int
payload_fd(const char *payload)
{
	char		tmpl[] = "/tmp/jobq-payload-XXXXXX";
	size_t		left = strlen(payload);
	int			fd = mkstemp(tmpl);

	if (fd < 0)
	{
		logmsg("cannot create a payload file: %m");
		return -1;
	}
	unlink(tmpl);
	while (left > 0)
	{
		ssize_t		w = write(fd, payload, left);

		if (w <= 0)
		{
			logmsg("cannot write the payload file: %m");
			close(fd);
			return -1;
		}
		payload += w;
		left -= w;
	}
	lseek(fd, 0, SEEK_SET);
	return fd;
}

/* start the process of a claimed job; false (and an outcome) if it cannot */
bool
start_job(Job *j)
{
	const Task *t = find_task(j->task);
	int			in_fd;
	int			out_pipe[2];
	int			err_pipe[2];
	pid_t		pid;

	j->started = now_seconds();
	j->next_heartbeat = j->started + lease_s / 3;
	if (t == NULL)
	{
		/* claimed by name, so this cannot happen; hand it back */
		j->outcome = OUT_RELEASE;
		return false;
	}
	if ((in_fd = payload_fd(j->payload)) < 0)
	{
		j->outcome = OUT_RELEASE;
		return false;
	}
	if (pipe(out_pipe) != 0)
	{
		logmsg("cannot create a pipe: %m");
		close(in_fd);
		j->outcome = OUT_RELEASE;
		return false;
	}
	if (pipe(err_pipe) != 0)
	{
		logmsg("cannot create a pipe: %m");
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
		logmsg("cannot start a process: %m");
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
void
stop_process(Job *j)
{
	if (j->pid <= 0 || j->exited || j->kill_at > 0)
		return;
	kill(-j->pid, SIGTERM);
	j->kill_at = now_seconds() + kill_after_s;
}

/* read what a job's process printed */
void
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
				j->out = j->out ? pg_realloc(j->out, j->out_len + take + 1) :
					pg_malloc(take + 1);
				memcpy(j->out + j->out_len, buf, take);
				j->out_len += take;
				j->out[j->out_len] = '\0';
			}
		}
	}
}

/* the tail of stderr, in order, valid UTF-8, without trailing blanks */
char *
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
void
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

void
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
void
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

/*
 * The process of j has ended: its output is complete once both pipes are
 * closed, or a second later (what it left running in the background may
 * hold them open: that is stopped with the group, and what was read is
 * what counts).
 */
void
finish_output(Job *j, double now)
{
	if ((j->out_fd < 0 && j->err_fd < 0) || now <= j->exited_at + 1)
		return;
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
