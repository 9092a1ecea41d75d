/*-------------------------------------------------------------------------
 *
 * top.c
 *		jobq top: a live view of the queues, the workers and the external
 *		executors, refreshed every 2 s; --once prints one frame.
 *
 * Everything comes from the views jobq.queue_stats, jobq.workers and
 * jobq.executors, as the connecting role may see them (row-level
 * security: a role counts its own jobs; pg_monitor sees all).  The rate
 * is of jobs finished over the last --interval.
 *
 * IDENTIFICATION
 *		cli/top.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <signal.h>
#include <time.h>

#include "getopt_long.h"

#include "jobq_cli.h"

static volatile sig_atomic_t interrupted = 0;

static void
on_interrupt(int sig)
{
	interrupted = 1;
}

static void
usage(FILE *out)
{
	fprintf(out,
			"Usage:\n"
			"  jobq top [--once] [--interval D]\n"
			"\n"
			"A live view of jobq: per queue, the jobs pending, scheduled and running, those\n"
			"that succeeded and failed in the last minute, the wait of the oldest due job\n"
			"and whether the queue is paused; every worker and external executor with what\n"
			"it runs; the rate of finished jobs.\n"
			"\n"
			"Options:\n"
			"      --once                print one frame and exit\n"
			"      --interval=D          refresh every D (default 2s)\n"
			"  -d, -h, -p, -U, -w, -W    connection options, as psql's\n");
}

static PGresult *
query(PGconn *conn, const char *sql, const char *param)
{
	const char *params[1] = {param};
	PGresult   *res = cli_exec(conn, sql, param ? 1 : 0, params);

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		cli_error("%s", cli_result_message(res, conn));
		PQclear(res);
		return NULL;
	}
	return res;
}

/*
 * A value to show, escaped (cli_esc()): a queue's or an executor's name
 * is anyone's choice, and an escape sequence in it must not reach the
 * terminal.  Up to 15 of them may be arguments of one printf().
 */
static const char *
val(PGresult *res, int r, int c)
{
	return PQgetisnull(res, r, c) ? "-" : cli_esc(PQgetvalue(res, r, c));
}

/* one frame; false on an error */
static bool
frame(PGconn *conn, double interval, bool clear)
{
	PGresult   *head;
	PGresult   *queues;
	PGresult   *workers;
	PGresult   *executors;
	char		window[32];
	int			r;

	snprintf(window, sizeof(window), "%.3f", interval < 1 ? 1 : interval);
	head = query(conn,
				 "SELECT pg_catalog.current_database(), pg_catalog.to_char(pg_catalog.now(), 'YYYY-MM-DD HH24:MI:SS'),"
				 "       (SELECT pg_catalog.count(*) FROM jobq.job_history"
				 "         WHERE finished_at > pg_catalog.clock_timestamp()"
				 "               - pg_catalog.make_interval(secs => $1::float8))"
				 "       / $1::float8,"
				 "       pg_catalog.current_setting('jobq.workers', true)",
				 window);
	if (head == NULL)
		return false;
	queues = query(conn,
				   "SELECT queue, pending, scheduled, running, succeeded_1m, failed_1m,"
				   "       COALESCE(pg_catalog.to_char(oldest_due_age, 'HH24:MI:SS.MS'), '-'),"
				   "       CASE WHEN paused THEN 'paused' ELSE '' END,"
				   "       COALESCE(concurrency::text, '')"
				   "  FROM jobq.queue_stats ORDER BY queue", NULL);
	workers = query(conn,
					"SELECT worker, pid, state, COALESCE(job_id::text, ''), COALESCE(queue, ''),"
					"       COALESCE(pg_catalog.to_char(pg_catalog.clock_timestamp() - job_started_at, 'HH24:MI:SS'), ''),"
					"       jobs_succeeded, jobs_retried, jobs_failed"
					"  FROM jobq.workers ORDER BY worker", NULL);
	executors = query(conn,
					  "SELECT executor, COALESCE(host, ''), COALESCE(pid::text, ''),"
					  "       COALESCE(pg_catalog.array_to_string(job_ids, ','), ''),"
					  "       jobs_claimed, jobs_succeeded, jobs_failed, leases_expired,"
					  "       pg_catalog.to_char(pg_catalog.clock_timestamp() - last_seen, 'HH24:MI:SS')"
					  "  FROM jobq.executors ORDER BY executor", NULL);
	if (queues == NULL || workers == NULL || executors == NULL)
	{
		PQclear(head);
		PQclear(queues);
		PQclear(workers);
		PQclear(executors);
		return false;
	}

	if (clear)
		fputs("\033[H\033[2J", stdout);
	printf("jobq top: database %s at %s, %.1f jobs/s finished over the last %g s, jobq.workers = %s\n\n",
		   val(head, 0, 0), val(head, 0, 1),
		   atof(PQgetvalue(head, 0, 2)), atof(window), val(head, 0, 3));

	printf("%-24s %9s %9s %7s %7s %7s %13s %6s %s\n", "QUEUE", "PENDING", "SCHEDULED",
		   "RUNNING", "OK/1m", "FAIL/1m", "OLDEST DUE", "LIMIT", "");
	for (r = 0; r < PQntuples(queues); r++)
		printf("%-24.24s %9s %9s %7s %7s %7s %13s %6s %s\n", val(queues, r, 0),
			   val(queues, r, 1), val(queues, r, 2), val(queues, r, 3),
			   val(queues, r, 4), val(queues, r, 5), val(queues, r, 6),
			   val(queues, r, 8), val(queues, r, 7));
	if (PQntuples(queues) == 0)
		printf("(no queue has jobs you may see)\n");

	printf("\n%-7s %8s %-9s %10s %-16s %9s %8s %7s %6s\n", "WORKER", "PID", "STATE", "JOB",
		   "QUEUE", "RUNNING", "OK", "RETRIED", "FAILED");
	for (r = 0; r < PQntuples(workers); r++)
		printf("%-7s %8s %-9s %10s %-16.16s %9s %8s %7s %6s\n", val(workers, r, 0),
			   val(workers, r, 1), val(workers, r, 2), val(workers, r, 3),
			   val(workers, r, 4), val(workers, r, 5), val(workers, r, 6),
			   val(workers, r, 7), val(workers, r, 8));

	printf("\n%-24s %-16s %8s %-16s %8s %8s %6s %7s %9s\n", "EXECUTOR", "HOST", "PID", "JOBS",
		   "CLAIMED", "OK", "FAILED", "EXPIRED", "LAST SEEN");
	for (r = 0; r < PQntuples(executors); r++)
		printf("%-24.24s %-16.16s %8s %-16.16s %8s %8s %6s %7s %9s\n", val(executors, r, 0),
			   val(executors, r, 1), val(executors, r, 2), val(executors, r, 3),
			   val(executors, r, 4), val(executors, r, 5), val(executors, r, 6),
			   val(executors, r, 7), val(executors, r, 8));
	if (PQntuples(executors) == 0)
		printf("(no external executor since the server started)\n");
	fflush(stdout);

	PQclear(head);
	PQclear(queues);
	PQclear(workers);
	PQclear(executors);
	return true;
}

int
cmd_top(int argc, char **argv)
{
	static struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"once", no_argument, NULL, 1},
		{"interval", required_argument, NULL, 2},
		{"help", no_argument, NULL, 1000},
		{NULL, 0, NULL, 0}
	};
	ConnOpts	conn_opts = {0};
	bool		once = false;
	double		interval = 2;
	PGconn	   *conn;
	int			c;

	optind = 1;
	while ((c = getopt_long(argc, argv, CONN_SHORT_OPTIONS, long_options, NULL)) != -1)
	{
		if (conn_option(&conn_opts, c, optarg))
			continue;
		switch (c)
		{
			case 1:
				once = true;
				break;
			case 2:
				if (!parse_duration(optarg, &interval) || interval < 0.1)
					cli_fatal(EXIT_USAGE, "invalid interval \"%s\": at least 0.1 s", optarg);
				break;
			case 1000:
				usage(stdout);
				return EXIT_OK;
			default:
				pg_log_error_hint("Try \"jobq top --help\" for more information.");
				return EXIT_USAGE;
		}
	}
	if (optind != argc)
		cli_fatal(EXIT_USAGE, "top takes no arguments");

	conn = cli_connect(&conn_opts, "jobq top", false);
	if (once)
	{
		bool		ok = frame(conn, interval, false);

		PQfinish(conn);
		return ok ? EXIT_OK : EXIT_ERROR;
	}
	signal(SIGINT, on_interrupt);
	signal(SIGTERM, on_interrupt);
	while (!interrupted)
	{
		struct timespec ts;

		if (!frame(conn, interval, isatty(1)))
		{
			PQfinish(conn);
			return EXIT_ERROR;
		}
		ts.tv_sec = (time_t) interval;
		ts.tv_nsec = (long) ((interval - ts.tv_sec) * 1e9);
		nanosleep(&ts, NULL);
	}
	PQfinish(conn);
	return EXIT_OK;
}
