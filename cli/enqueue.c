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

/* what to queue, as the command line says it */
typedef struct EnqueueArgs
{
	ConnOpts	conn_opts;
	const char *task;			/* --task, or NULL for SQL */
	const char *text;			/* the task's name, or the SQL */
	const char *payload;
	char	   *payload_buf;	/* --payload-file's contents */
	const char *queue;
	const char *priority;
	const char *run_at;
	const char *max_attempts;
	char		timeout[64];	/* "" if not given */
	long		count;
	bool		print_count;
} EnqueueArgs;

/* read --payload-file (- for stdin): a JSON text without NUL bytes */
static const char *
payload_file(EnqueueArgs *args, const char *path)
{
	size_t		len;

	args->payload_buf = read_file(path, MAX_PAYLOAD_FILE, &len);
	if (args->payload_buf == NULL)
		cli_fatal(EXIT_ERROR, "could not read payload file \"%s\": %m", path);
	if (strlen(args->payload_buf) != len)
		cli_fatal(EXIT_ERROR, "payload file \"%s\" contains a NUL byte", path);
	return args->payload_buf;
}

/* the command line into args; exit with a message on an error */
static void
enqueue_options(int argc, char **argv, EnqueueArgs *args)
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
	int			c;
	long		v;
	double		d;

	args->count = 1;
	optind = 1;
	while ((c = getopt_long(argc, argv, CONN_SHORT_OPTIONS "q:n:t:", long_options, NULL)) != -1)
	{
		if (conn_option(&args->conn_opts, c, optarg))
			continue;
		switch (c)
		{
			case 'q':
				args->queue = optarg;
				break;
			case 1:
				if (!parse_int(optarg, -1000, 1000, &v))
					cli_fatal(EXIT_USAGE, "priority must be a whole number from -1000 to 1000, not \"%s\"", optarg);
				args->priority = optarg;
				break;
			case 2:
				args->run_at = optarg;
				break;
			case 3:
				if (!parse_int(optarg, 1, 1000, &v))
					cli_fatal(EXIT_USAGE, "max attempts must be a whole number from 1 to 1000, not \"%s\"", optarg);
				args->max_attempts = optarg;
				break;
			case 4:
				if (!parse_duration(optarg, &d))
					cli_fatal(EXIT_USAGE, "invalid timeout \"%s\": give seconds, or a number with ms, s, m or h", optarg);
				snprintf(args->timeout, sizeof(args->timeout), "%.6f", d);
				break;
			case 'n':
				if (!parse_int(optarg, 1, MAX_COUNT, &args->count))
					cli_fatal(EXIT_USAGE, "count must be a whole number from 1 to %d, not \"%s\"", MAX_COUNT, optarg);
				args->print_count = true;
				break;
			case 't':
				args->task = optarg;
				break;
			case 5:
				args->payload = optarg;
				break;
			case 6:
				args->payload = payload_file(args, optarg);
				break;
			case 1000:
				usage(stdout);
				exit(EXIT_OK);
			default:
				pg_log_error_hint("Try \"jobq enqueue --help\" for more information.");
				exit(EXIT_USAGE);
		}
	}

	if (args->task == NULL)
	{
		if (optind != argc - 1)
			cli_fatal(EXIT_USAGE, "enqueue takes one SQL argument (or --task NAME); try \"jobq enqueue --help\"");
		if (args->payload != NULL)
			cli_fatal(EXIT_USAGE, "a payload goes with --task");
		args->text = argv[optind];
	}
	else
	{
		if (optind != argc)
			cli_fatal(EXIT_USAGE, "with --task, enqueue takes no SQL argument");
		args->text = args->task;
		if (args->payload == NULL)
			args->payload = "{}";
	}
}

/*
 * Queue the jobs: one statement, every value a parameter that
 * jobq.enqueue() or jobq.enqueue_task() checks.  The result has a row per
 * job, its id.
 */
static PGresult *
queue_jobs(PGconn *conn, const EnqueueArgs *args)
{
	char		count_text[32];
	const char *params[8];

	snprintf(count_text, sizeof(count_text), "%ld", args->count);
	params[0] = args->text;
	params[1] = args->payload;
	params[2] = args->queue;
	params[3] = args->priority;
	params[4] = args->run_at;
	params[5] = args->max_attempts;
	params[6] = args->timeout[0] ? args->timeout : NULL;
	params[7] = count_text;
	if (args->task == NULL)
		return cli_exec(conn,
						"SELECT jobq.enqueue($1,"
						"  queue => COALESCE($3, 'default'),"
						"  priority => COALESCE($4::integer, 0),"
						"  run_at => COALESCE($5::timestamptz, pg_catalog.now()),"
						"  max_attempts => $6::integer,"
						"  timeout => pg_catalog.make_interval(secs => $7::float8))"
						"  FROM pg_catalog.generate_series(1, $8::integer) AS g"
						" WHERE $2::text IS NULL",
						8, params);
	return cli_exec(conn,
					"SELECT jobq.enqueue_task($1, $2::jsonb,"
					"  queue => COALESCE($3, 'default'),"
					"  priority => COALESCE($4::integer, 0),"
					"  run_at => COALESCE($5::timestamptz, pg_catalog.now()),"
					"  max_attempts => $6::integer,"
					"  timeout => pg_catalog.make_interval(secs => $7::float8))"
					"  FROM pg_catalog.generate_series(1, $8::integer) AS g",
					8, params);
}

int
cmd_enqueue(int argc, char **argv)
{
	EnqueueArgs args = {0};
	PGconn	   *conn;
	PGresult   *res;
	int			i;

	enqueue_options(argc, argv, &args);
	conn = cli_connect(&args.conn_opts, "jobq enqueue", false);
	res = queue_jobs(conn, &args);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		cli_error("%s", cli_result_message(res, conn));
		PQclear(res);
		PQfinish(conn);
		return EXIT_ERROR;
	}
	if (args.print_count)
		printf("%d\n", PQntuples(res));
	else
		for (i = 0; i < PQntuples(res); i++)
			printf("%s\n", cli_esc(PQgetvalue(res, i, 0)));
	PQclear(res);
	PQfinish(conn);
	pg_free(args.payload_buf);
	return EXIT_OK;
}
