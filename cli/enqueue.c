/*-------------------------------------------------------------------------
 *
 * enqueue.c
 *		jobq enqueue: queue SQL jobs, or jobs of a task with a payload.
 *
 * Every value goes to the server as a parameter of one statement, which
 * checks it (jobq.enqueue() and jobq.enqueue_task() are the API); the
 * command prints the new jobs' ids, or with --count their number.
 *
 * IDENTIFICATION
 *		cli/enqueue.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "getopt_long.h"

#include "jobq_cli.h"

/* the largest payload file read (the server has its own limit) */
#define MAX_PAYLOAD_FILE	(64 * 1024 * 1024)
#define MAX_COUNT			10000000

static void
usage(FILE *out)
{
	fprintf(out,
			"Usage:\n"
			"  jobq enqueue [OPTION]... SQL\n"
			"  jobq enqueue --task NAME [--payload JSON | --payload-file FILE] [OPTION]...\n"
			"\n"
			"Queue a job that runs SQL as the connecting role, or a job of a registered\n"
			"task with a JSON payload.  Prints the job's id, or with --count the number\n"
			"of jobs queued.\n"
			"\n"
			"Options:\n"
			"  -q, --queue=QUEUE         queue (default \"default\")\n"
			"      --priority=N          priority, -1000 to 1000; higher runs first (default 0)\n"
			"      --run-at=TIME         when the job is due (a timestamptz; default now)\n"
			"      --max-attempts=N      attempts before it fails (default jobq.default_max_attempts)\n"
			"      --timeout=D           time limit per attempt, as 30s, 5m (default jobq.default_timeout)\n"
			"  -n, --count=N             queue N such jobs and print how many\n"
			"  -t, --task=NAME           a job of task NAME instead of SQL\n"
			"      --payload=JSON        the task's payload (default {})\n"
			"      --payload-file=FILE   read the payload from FILE (- for stdin)\n"
			"  -d, -h, -p, -U, -w, -W    connection options, as psql's\n");
}

int
cmd_enqueue(int argc, char **argv)
{
	static struct option long_options[] = {
		CONN_LONG_OPTIONS,
		{"queue", required_argument, NULL, 'q'},
		{"priority", required_argument, NULL, 1},
		{"run-at", required_argument, NULL, 2},
		{"max-attempts", required_argument, NULL, 3},
		{"timeout", required_argument, NULL, 4},
		{"count", required_argument, NULL, 'n'},
		{"task", required_argument, NULL, 't'},
		{"payload", required_argument, NULL, 5},
		{"payload-file", required_argument, NULL, 6},
		{"help", no_argument, NULL, 1000},
		{NULL, 0, NULL, 0}
	};
	ConnOpts	conn_opts = {0};
	const char *queue = NULL;
	const char *priority = NULL;
	const char *run_at = NULL;
	const char *max_attempts = NULL;
	char		timeout[64];
	bool		have_timeout = false;
	long		count = 1;
	bool		print_count = false;
	const char *task = NULL;
	const char *payload = NULL;
	char	   *payload_buf = NULL;
	const char *sql_text = NULL;
	char		count_text[32];
	const char *params[8];
	PGconn	   *conn;
	PGresult   *res;
	int			c;
	long		v;
	double		d;

	optind = 1;
	while ((c = getopt_long(argc, argv, CONN_SHORT_OPTIONS "q:n:t:", long_options, NULL)) != -1)
	{
		if (conn_option(&conn_opts, c, optarg))
			continue;
		switch (c)
		{
			case 'q':
				queue = optarg;
				break;
			case 1:
				if (!parse_int(optarg, -1000, 1000, &v))
					cli_fatal(EXIT_USAGE, "priority must be a whole number from -1000 to 1000, not \"%s\"", optarg);
				priority = optarg;
				break;
			case 2:
				run_at = optarg;
				break;
			case 3:
				if (!parse_int(optarg, 1, 1000, &v))
					cli_fatal(EXIT_USAGE, "max attempts must be a whole number from 1 to 1000, not \"%s\"", optarg);
				max_attempts = optarg;
				break;
			case 4:
				if (!parse_duration(optarg, &d))
					cli_fatal(EXIT_USAGE, "invalid timeout \"%s\": give seconds, or a number with ms, s, m or h", optarg);
				snprintf(timeout, sizeof(timeout), "%.6f", d);
				have_timeout = true;
				break;
			case 'n':
				if (!parse_int(optarg, 1, MAX_COUNT, &count))
					cli_fatal(EXIT_USAGE, "count must be a whole number from 1 to %d, not \"%s\"", MAX_COUNT, optarg);
				print_count = true;
				break;
			case 't':
				task = optarg;
				break;
			case 5:
				payload = optarg;
				break;
			case 6:
				{
					size_t		len;

					payload_buf = read_file(optarg, MAX_PAYLOAD_FILE, &len);
					if (payload_buf == NULL)
						cli_fatal(EXIT_ERROR, "could not read payload file \"%s\": %s",
								  optarg, strerror(errno));
					if (strlen(payload_buf) != len)
						cli_fatal(EXIT_ERROR, "payload file \"%s\" contains a NUL byte", optarg);
					payload = payload_buf;
					break;
				}
			case 1000:
				usage(stdout);
				return EXIT_OK;
			default:
				pg_log_error_hint("Try \"jobq enqueue --help\" for more information.");
				return EXIT_USAGE;
		}
	}

	if (task == NULL)
	{
		if (optind != argc - 1)
			cli_fatal(EXIT_USAGE, "enqueue takes one SQL argument (or --task NAME); try \"jobq enqueue --help\"");
		if (payload != NULL)
			cli_fatal(EXIT_USAGE, "a payload goes with --task");
		sql_text = argv[optind];
	}
	else if (optind != argc)
		cli_fatal(EXIT_USAGE, "with --task, enqueue takes no SQL argument");
	if (task != NULL && payload == NULL)
		payload = "{}";

	snprintf(count_text, sizeof(count_text), "%ld", count);
	params[0] = task ? task : sql_text;
	params[1] = payload;
	params[2] = queue;
	params[3] = priority;
	params[4] = run_at;
	params[5] = max_attempts;
	params[6] = have_timeout ? timeout : NULL;
	params[7] = count_text;

	conn = cli_connect(&conn_opts, "jobq enqueue", false);
	if (task == NULL)
		res = cli_exec(conn,
					   "SELECT jobq.enqueue($1,"
					   "  queue => COALESCE($3, 'default'),"
					   "  priority => COALESCE($4::integer, 0),"
					   "  run_at => COALESCE($5::timestamptz, pg_catalog.now()),"
					   "  max_attempts => $6::integer,"
					   "  timeout => pg_catalog.make_interval(secs => $7::float8))"
					   "  FROM pg_catalog.generate_series(1, $8::integer) AS g"
					   " WHERE $2::text IS NULL",
					   8, params);
	else
		res = cli_exec(conn,
					   "SELECT jobq.enqueue_task($1, $2::jsonb,"
					   "  queue => COALESCE($3, 'default'),"
					   "  priority => COALESCE($4::integer, 0),"
					   "  run_at => COALESCE($5::timestamptz, pg_catalog.now()),"
					   "  max_attempts => $6::integer,"
					   "  timeout => pg_catalog.make_interval(secs => $7::float8))"
					   "  FROM pg_catalog.generate_series(1, $8::integer) AS g",
					   8, params);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		cli_error("%s", cli_result_message(res, conn));
		PQclear(res);
		PQfinish(conn);
		return EXIT_ERROR;
	}
	if (print_count)
		printf("%d\n", PQntuples(res));
	else
	{
		int			i;

		for (i = 0; i < PQntuples(res); i++)
			printf("%s\n", cli_esc(PQgetvalue(res, i, 0)));
	}
	PQclear(res);
	PQfinish(conn);
	free(payload_buf);
	return EXIT_OK;
}
