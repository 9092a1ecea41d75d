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
 * One loop (this file) waits on the claim's connection, on the processes'
 * output and on signals (a self-pipe), and then takes each step in turn:
 * the stop, the connections, the outcomes, the heartbeats and limits of
 * time, the next claim.  work_options.c reads the command line,
 * work_child.c runs the processes, work_lease.c talks to the server.
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

#include <fcntl.h>
#include <poll.h>

#include "work.h"

Job		   *jobs;				/* concurrency slots */
int			signal_pipe[2] = {-1, -1};
volatile sig_atomic_t stop_signals = 0;	/* SIGINT and SIGTERM seen */
double		stop_deadline = 0;	/* once stopping: the end of the grace */
int			exit_status = EXIT_OK;

/*
 * One line of the executor's log on stdout, "[NAME] message", escaped as
 * a whole (append_escaped()): what a job printed on stderr, a server
 * message or a name cannot end the line early nor act on a terminal, so
 * no job can write a line that looks like the executor's.
 */
void
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
	/* a message longer than msg (a huge server message) says it was cut */
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

/* the self-pipe, and the handlers that write to it */
static void
setup_signals(void)
{
	struct sigaction sa;

	if (pipe(signal_pipe) != 0)
		cli_fatal(EXIT_ERROR, "cannot create a pipe: %m");
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
}

/*
 * A stop was asked for: no more claims (the one waiting is cancelled),
 * the running jobs get --grace; a second signal ends the grace at once.
 */
static void
handle_stop(double now)
{
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
}

/* each job whose process has ended: its outcome, decided and delivered */
static void
settle_jobs(double now)
{
	int			i;

	for (i = 0; i < concurrency; i++)
	{
		Job		   *j = &jobs[i];

		if (!j->used)
			continue;
		if (j->outcome == OUT_NONE && j->exited)
			finish_output(j, now);
		if (j->outcome == OUT_NONE && j->exited && j->out_fd < 0 && j->err_fd < 0)
			decide_outcome(j);
		if (j->outcome != OUT_NONE)
			(void) deliver(j);
	}

	/* stopping, and the server is out of reach: leases will expire */
	if (stop_deadline > 0 && now > stop_deadline + kill_after_s + 10 && ctl_conn == NULL)
		for (i = 0; i < concurrency; i++)
			if (jobs[i].used && jobs[i].outcome != OUT_NONE)
			{
				logmsg("cannot report job %s: the server is out of reach; its lease will expire",
					   jobs[i].id);
				free_job(&jobs[i]);
			}
}

/*
 * Claim as many jobs as there are free slots, unless stopping; false once
 * the executor is done (stopping, or --once has had its job or found
 * none) and nothing runs any more.
 */
static bool
claim_more(double now)
{
	int			busy = running_jobs();

	if (stop_signals > 0 || (once && (ran_one || claimed_none)))
		return busy > 0 || claim_in_flight;
	if (!claim_in_flight && claim_conn && busy < concurrency && now >= reconnect_at)
		send_claim(concurrency - busy, once ? once_wait_s : CLAIM_WAIT_S);
	return true;
}

/* when the loop must wake at the latest: the earliest thing due */
static double
next_wakeup(double now)
{
	double		next = now + 1.0;
	int			i;

	for (i = 0; i < concurrency; i++)
	{
		Job		   *j = &jobs[i];

		if (!j->used)
			continue;
		if (j->pid > 0 && !j->exited)
		{
			next = Min(next, j->next_heartbeat);
			if (j->kill_at > 0)
				next = Min(next, j->kill_at);
			if (j->timeout_s > 0 && !j->timed_out)
				next = Min(next, j->started + j->timeout_s);
		}
		if (j->outcome != OUT_NONE)
			next = Min(next, now + 0.2);	/* waiting for a connection */
		if (j->exited && j->outcome == OUT_NONE)
			next = Min(next, j->exited_at + 1.01);
	}
	if (stop_deadline > 0)
		next = Min(next, stop_deadline);
	if (reconnect_at > now)
		next = Min(next, reconnect_at);
	if (claim_in_flight)
		next = Min(next, claim_deadline);
	return next;
}

/*
 * Wait for the claim's result, the processes' output or a signal, until
 * something is due; then empty the self-pipe and reap the processes.
 */
static void
wait_for_events(double now)
{
	struct pollfd fds[2 + 2 * MAX_CONCURRENCY];
	int			nfds = 0;
	int			timeout_ms;
	int			i;
	char		buf[64];

	fds[nfds].fd = signal_pipe[0];
	fds[nfds++].events = POLLIN;
	if (claim_in_flight && claim_conn)
	{
		fds[nfds].fd = PQsocket(claim_conn);
		fds[nfds++].events = POLLIN;
	}
	for (i = 0; i < concurrency; i++)
	{
		if (!jobs[i].used)
			continue;
		if (jobs[i].out_fd >= 0)
		{
			fds[nfds].fd = jobs[i].out_fd;
			fds[nfds++].events = POLLIN;
		}
		if (jobs[i].err_fd >= 0)
		{
			fds[nfds].fd = jobs[i].err_fd;
			fds[nfds++].events = POLLIN;
		}
	}
	timeout_ms = Max((int) ((next_wakeup(now) - now) * 1000) + 1, 1);
	if (poll(fds, nfds, timeout_ms) < 0 && errno != EINTR)
		cli_fatal(EXIT_ERROR, "poll failed: %m");

	while (read(signal_pipe[0], buf, sizeof(buf)) > 0)
		;
	reap_children();
}

/* what the running processes printed since the last turn */
static void
read_outputs(void)
{
	int			i;

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

int
cmd_work(int argc, char **argv)
{
	int			i;

	work_options(argc, argv);
	jobs = pg_malloc0_array(Job, concurrency);
	for (i = 0; i < concurrency; i++)
		jobs[i].out_fd = jobs[i].err_fd = -1;
	setup_signals();

	/* the first connection must work: a wrong setting is an error */
	ctl_conn = cli_connect(&conn_opts, "jobq work", false);
	logmsg("ready: %d task%s, concurrency %d, lease %g s", ntasks, ntasks == 1 ? "" : "s",
		   concurrency, lease_s);

	for (;;)
	{
		double		now = now_seconds();

		handle_stop(now);
		watch_claim(now);
		ensure_connected();
		settle_jobs(now);
		heartbeats(now);
		check_times(now);
		if (!claim_more(now))
			break;
		wait_for_events(now);
		claim_result();
		read_outputs();
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
