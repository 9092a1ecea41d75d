/*-------------------------------------------------------------------------
 *
 * api.c
 *		SQL-callable functions of jobq written in C.
 *
 * jobq.enqueue() validates its arguments, records the calling role
 * (current_user) as the job's owner and inserts the job.  Nothing is
 * written before every argument has been checked.  The insert joins the
 * caller's transaction, so a job enqueued by a transaction that rolls back
 * never exists; at commit, idle workers are woken (wakeup.c).
 *
 * The row goes straight into the heap and the indexes of jobq.job, with
 * no SQL statement (store.c): a statement enqueueing 100k jobs through SPI
 * ran at 24k jobs/s.
 *
 * IDENTIFICATION
 *		src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "access/detoast.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "depend.h"
#include "slots.h"
#include "wakeup.h"

PG_FUNCTION_INFO_V1(jobq_enqueue);
PG_FUNCTION_INFO_V1(jobq_enqueue_task);
PG_FUNCTION_INFO_V1(jobq_current_job);
PG_FUNCTION_INFO_V1(jobq_worker_info);
PG_FUNCTION_INFO_V1(jobq_running_jobs);

/* the columns of jobq.job that an enqueue writes */
typedef enum JobColumn
{
	COL_ID,
	COL_QUEUE,
	COL_STATE,
	COL_PRIORITY,
	COL_RUN_AT,
	COL_ATTEMPTS,
	COL_MAX_ATTEMPTS,
	COL_TIMEOUT,
	COL_OWNER,
	COL_COMMAND,
	COL_CREATED_AT,
	COL_TASK,
	COL_PAYLOAD,
	COL_DEDUP_KEY,
	COL_DEPENDS_ON,
	COL_NOT_BEFORE,
	COL_COUNTED,
	COL_EXTERNAL,
	NUM_JOB_COLUMNS
} JobColumn;

static const struct
{
	const char *name;
	Oid			type;
}			job_columns[NUM_JOB_COLUMNS] = {
	[COL_ID] = {"id", INT8OID},
	[COL_QUEUE] = {"queue", TEXTOID},
	[COL_STATE] = {"state", ANYENUMOID},
	[COL_PRIORITY] = {"priority", INT2OID},
	[COL_RUN_AT] = {"run_at", TIMESTAMPTZOID},
	[COL_ATTEMPTS] = {"attempts", INT4OID},
	[COL_MAX_ATTEMPTS] = {"max_attempts", INT4OID},
	[COL_TIMEOUT] = {"timeout", INTERVALOID},
	[COL_OWNER] = {"owner", REGROLEOID},
	[COL_COMMAND] = {"command", TEXTOID},
	[COL_CREATED_AT] = {"created_at", TIMESTAMPTZOID},
	[COL_TASK] = {"task", TEXTOID},
	[COL_PAYLOAD] = {"payload", JSONBOID},
	[COL_DEDUP_KEY] = {"dedup_key", TEXTOID},
	[COL_DEPENDS_ON] = {"depends_on", INT8ARRAYOID},
	[COL_NOT_BEFORE] = {"not_before", TIMESTAMPTZOID},
	[COL_COUNTED] = {"counted", BOOLOID},
	[COL_EXTERNAL] = {"external", BOOLOID},
};

/*
 * columns that a jobq.job of some version lacks: those of tasks before
 * 0.3.0, counted before 0.4.0, external before 0.5.0, state from 0.5.0 on
 */
#define JOB_COLUMN_OPTIONAL(c) \
	((c) == COL_TASK || (c) == COL_PAYLOAD || (c) == COL_DEDUP_KEY || \
	 (c) == COL_DEPENDS_ON || (c) == COL_NOT_BEFORE || (c) == COL_COUNTED || \
	 (c) == COL_STATE || (c) == COL_EXTERNAL)

static JobqTable job_table = {.relname = "job"};
static uint64 job_columns_generation = 0;
static AttrNumber job_attno[NUM_JOB_COLUMNS];
static Datum pending_state;		/* 'pending'::jobq.job_state */
static Oid	job_seqid = InvalidOid;

/*
 * Insert one pending job into jobq.job; returns its id.  values are
 * indexed by JobColumn; COL_ID, COL_STATE, COL_ATTEMPTS and COL_CREATED_AT
 * are filled here.  See store.c.
 */
static int64
insert_job(Datum *values, bool *nulls)
{
	Relation	rel = JobqTableOpen(&job_table);
	TupleTableSlot *slot;
	int64		id;
	int			i;

	if (job_columns_generation != job_table.generation)
	{
		Oid			seqid = JobqSchemaRelid("job_id_seq");

		for (i = 0; i < NUM_JOB_COLUMNS; i++)
			job_attno[i] = JobqTableColumn(&job_table, job_columns[i].name,
										   job_columns[i].type,
										   !JOB_COLUMN_OPTIONAL(i));
		/* a column this library does not know stays null: it must allow it */
		for (i = 0; i < job_table.desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(job_table.desc, i);
			int			c;

			for (c = 0; c < NUM_JOB_COLUMNS; c++)
				if (job_attno[c] == att->attnum)
					break;
			if (c == NUM_JOB_COLUMNS && att->attnotnull && !att->attisdropped)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("unrecognized column \"%s\" in relation \"jobq.job\"",
								NameStr(att->attname)),
						 errdetail("This version of the jobq library does not know how to fill it."),
						 errhint("Install the jobq library that matches the extension's version.")));
		}
		if (!OidIsValid(seqid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation \"jobq.job_id_seq\" does not exist"),
					 errhint("Reinstall the extension with DROP EXTENSION jobq and CREATE EXTENSION jobq.")));
		if (job_attno[COL_STATE] != InvalidAttrNumber)
			pending_state =
				DirectFunctionCall2(enum_in, CStringGetDatum("pending"),
									ObjectIdGetDatum(TupleDescAttr(job_table.desc,
																   job_attno[COL_STATE] - 1)->atttypid));
		job_seqid = seqid;
		job_columns_generation = job_table.generation;
	}

	id = nextval_internal(job_seqid, false);
	values[COL_ID] = Int64GetDatum(id);
	nulls[COL_ID] = false;
	values[COL_STATE] = pending_state;
	nulls[COL_STATE] = (job_attno[COL_STATE] == InvalidAttrNumber);
	values[COL_ATTEMPTS] = Int32GetDatum(0);
	nulls[COL_ATTEMPTS] = false;
	values[COL_CREATED_AT] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	nulls[COL_CREATED_AT] = false;

	slot = JobqTableSlot(&job_table);
	for (i = 0; i < NUM_JOB_COLUMNS; i++)
	{
		if (job_attno[i] == InvalidAttrNumber)
		{
			/* a task's job needs the columns of 0.3.0 */
			if (!nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("relation \"jobq.job\" has no column \"%s\"",
								job_columns[i].name),
						 errhint("Update the extension with ALTER EXTENSION jobq UPDATE.")));
			continue;
		}
		slot->tts_values[job_attno[i] - 1] = values[i];
		slot->tts_isnull[job_attno[i] - 1] = nulls[i];
	}
	ExecStoreVirtualTuple(slot);
	JobqTableInsert(&job_table, rel, &slot, 1);
	ExecDropSingleTupleTableSlot(slot);

	table_close(rel, NoLock);
	return id;
}

/*
 * Insert a job with a dedup key, or find the unfinished job of its queue
 * and owner that has the key; returns the id, and sets *added if the job
 * is new.
 * SQL this time (INSERT ... ON CONFLICT, as the tables' owner): the
 * speculative insertion of the unique index job_dedup_idx is what makes
 * concurrent enqueues with one key agree.  The job found may finish (and
 * leave jobq.job) between the conflict and the look-up: then try again.
 */
static int64
insert_dedup_job(Datum *values, bool *nulls, bool *added)
{
	Oid			argtypes[14] = {TEXTOID, INT2OID, TIMESTAMPTZOID, INT4OID,
		INTERVALOID, OIDOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, INT8ARRAYOID,
	TIMESTAMPTZOID, BOOLOID, BOOLOID};
	Datum		v[14];
	char		n[14];
	int			cols[14] = {COL_QUEUE, COL_PRIORITY, COL_RUN_AT, COL_MAX_ATTEMPTS,
		COL_TIMEOUT, COL_OWNER, COL_COMMAND, COL_TASK, COL_PAYLOAD, COL_DEDUP_KEY,
	COL_DEPENDS_ON, COL_NOT_BEFORE, COL_COUNTED, COL_EXTERNAL};
	int			i;
	const JobqSchema *schema = JobqSchemaRequire();
	bool		per_owner = schema->dedup_per_owner;
	int			nargs = schema->executors ? 14 : per_owner ? 13 : 12;
	const char *sql;

	/* the columns of the installed version (api.c fills the rest) */
	if (schema->executors)
		sql = "INSERT INTO jobq.job (queue, priority, run_at, max_attempts, timeout,"
			"       owner, command, task, payload, dedup_key, depends_on,"
			"       not_before, counted, external, created_at)"
			"VALUES ($1, $2, $3, $4, $5, $6::pg_catalog.regrole, $7, $8, $9, $10,"
			"        $11, $12, $13, $14, pg_catalog.now())"
			"ON CONFLICT (queue, owner, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING"
			" RETURNING id";
	else if (per_owner)
		sql = "INSERT INTO jobq.job (queue, priority, run_at, max_attempts, timeout,"
			"       owner, command, task, payload, dedup_key, depends_on,"
			"       not_before, counted, created_at)"
			"VALUES ($1, $2, $3, $4, $5, $6::pg_catalog.regrole, $7, $8, $9, $10,"
			"        $11, $12, $13, pg_catalog.now())"
			"ON CONFLICT (queue, owner, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING"
			" RETURNING id";
	else
		sql = "INSERT INTO jobq.job (queue, priority, run_at, max_attempts, timeout,"
			"       owner, command, task, payload, dedup_key, depends_on,"
			"       not_before, created_at)"
			"VALUES ($1, $2, $3, $4, $5, $6::pg_catalog.regrole, $7, $8, $9, $10,"
			"        $11, $12, pg_catalog.now())"
			"ON CONFLICT (queue, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING"
			" RETURNING id";

	for (i = 0; i < 14; i++)
	{
		v[i] = values[cols[i]];
		n[i] = nulls[cols[i]] ? 'n' : ' ';
	}

	for (;;)
	{
		bool		isnull;
		int64		id = 0;

		CHECK_FOR_INTERRUPTS();
		if (JobqExecuteAsOwnerNulls(sql, nargs, argtypes, v, n, false) !=
			SPI_OK_INSERT_RETURNING)
			elog(ERROR, "could not enqueue jobq job");
		if (SPI_processed > 0)
		{
			id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
			SPI_finish();
			*added = true;
			return id;
		}
		SPI_finish();

		/* the caller's own job: keys are per queue and owner */
		if (JobqExecuteAsOwnerNulls(
									"SELECT id FROM jobq.job"
									" WHERE queue OPERATOR(pg_catalog.=) $1"
									"   AND owner::pg_catalog.oid OPERATOR(pg_catalog.=) $6"
									"   AND dedup_key OPERATOR(pg_catalog.=) $10",
									12, argtypes, v, n, false) != SPI_OK_SELECT)
			elog(ERROR, "could not look up jobq job by dedup key");
		if (SPI_processed > 0)
			id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
		SPI_finish();
		if (id == 0 && !per_owner)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("dedup key is in use by another role's job in queue \"%s\"",
							TextDatumGetCString(values[COL_QUEUE])),
					 errhint("Update the extension with ALTER EXTENSION jobq UPDATE: from version 0.4.0 on, dedup keys are per role.")));
		if (id != 0)
		{
			*added = false;
			return id;
		}
	}
}

/*
 * Jobs are run by workers connected to jobq.database only; a job enqueued
 * anywhere else would wait forever.
 */
static void
check_jobq_database(void)
{
	static bool checked = false;
	char	   *dbname;

	if (checked)
		return;
	dbname = get_database_name(MyDatabaseId);
	if (dbname == NULL || strcmp(dbname, jobq_database) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq workers do not run jobs in database \"%s\"",
						dbname ? dbname : "?"),
				 errdetail("Workers run jobs in the database named by \"jobq.database\", \"%s\".",
						   jobq_database),
				 errhint("Enqueue the job in database \"%s\", or change \"jobq.database\" and restart the server.",
						 jobq_database)));
	checked = true;
}

static bool
is_blank(const char *s, int len)
{
	int			i;

	for (i = 0; i < len; i++)
		if (!isspace((unsigned char) s[i]))
			return false;
	return true;
}

/*
 * Length of an interval in milliseconds, months counted as 30 days.
 */
static int64
interval_ms(Interval *iv)
{
	int128		usecs = iv->time;

	usecs += (int128) iv->day * USECS_PER_DAY;
	usecs += (int128) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
	if (usecs / 1000 > PG_INT64_MAX || usecs / 1000 < PG_INT64_MIN)
		ereport(ERROR,
				(errcode(ERRCODE_INTERVAL_FIELD_OVERFLOW),
				 errmsg("timeout is out of range")));
	return (int64) (usecs / 1000);
}

/* the options of an enqueue, checked */
typedef struct EnqueueOptions
{
	text	   *queue;
	int32		priority;
	TimestampTz run_at;
	int32		max_attempts;
	Datum		timeout;		/* an interval, unless timeout_null */
	bool		timeout_null;
	text	   *dedup_key;		/* NULL: none */
	ArrayType  *depends_on;		/* NULL: none */
	bool		wait_for_jobs;	/* some job of depends_on is unfinished */
} EnqueueOptions;

/* queue and priority: arguments opt and opt + 1 */
static void
enqueue_queue_priority(FunctionCallInfo fcinfo, int opt, EnqueueOptions *o)
{
	if (PG_ARGISNULL(opt))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue name must not be null"),
				 errhint("Omit the queue argument to use queue \"default\".")));
	o->queue = PG_GETARG_TEXT_PP(opt);
	if (VARSIZE_ANY_EXHDR(o->queue) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("queue name must not be empty")));
	if (VARSIZE_ANY_EXHDR(o->queue) > JOBQ_MAX_QUEUE_NAME)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("queue name \"%s\" is too long", text_to_cstring(o->queue)),
				 errdetail("Queue names are at most %d bytes long.",
						   JOBQ_MAX_QUEUE_NAME)));

	if (PG_ARGISNULL(opt + 1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("priority must not be null"),
				 errhint("Omit the priority argument to use priority 0.")));
	o->priority = PG_GETARG_INT32(opt + 1);
	if (o->priority < JOBQ_MIN_PRIORITY || o->priority > JOBQ_MAX_PRIORITY)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("priority %d is out of range", o->priority),
				 errdetail("Priorities range from %d to %d; higher runs first.",
						   JOBQ_MIN_PRIORITY, JOBQ_MAX_PRIORITY)));
}

/* run_at, max_attempts and timeout: arguments opt + 2 to opt + 4 */
static void
enqueue_timing(FunctionCallInfo fcinfo, int opt, EnqueueOptions *o)
{
	if (PG_ARGISNULL(opt + 2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run_at must not be null"),
				 errhint("Omit the run_at argument to run the job as soon as possible.")));
	o->run_at = PG_GETARG_TIMESTAMPTZ(opt + 2);
	if (TIMESTAMP_NOT_FINITE(o->run_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("run_at must be a finite timestamp")));

	o->max_attempts = PG_ARGISNULL(opt + 3) ? jobq_default_max_attempts :
		PG_GETARG_INT32(opt + 3);
	if (o->max_attempts < 1 || o->max_attempts > JOBQ_MAX_ATTEMPTS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be between 1 and %d, not %d",
						JOBQ_MAX_ATTEMPTS, o->max_attempts)));

	/* timeout: NULL means jobq.default_timeout; zero means no limit */
	o->timeout = (Datum) 0;
	o->timeout_null = true;
	if (!PG_ARGISNULL(opt + 4))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(opt + 4);
		int64		ms = interval_ms(iv);

		if (ms < 0 || iv->time < 0 || iv->day < 0 || iv->month < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("timeout must not be negative"),
					 errhint("Use a timeout of 0 for no time limit.")));
		if (ms > 0)
		{
			o->timeout = IntervalPGetDatum(iv);
			o->timeout_null = false;
		}
	}
	else if (jobq_default_timeout > 0)
	{
		Interval   *iv = palloc0(sizeof(Interval));

		iv->time = (int64) jobq_default_timeout * 1000;
		o->timeout = IntervalPGetDatum(iv);
		o->timeout_null = false;
	}
}

/*
 * dedup_key and depends_on: arguments opt + 5 and opt + 6, which
 * jobq.enqueue() of 0.2.0 does not have.
 */
static void
enqueue_dedup_depends(FunctionCallInfo fcinfo, int opt, EnqueueOptions *o)
{
	o->dedup_key = NULL;
	if (PG_NARGS() > opt + 5 && !PG_ARGISNULL(opt + 5))
	{
		o->dedup_key = PG_GETARG_TEXT_PP(opt + 5);
		if (VARSIZE_ANY_EXHDR(o->dedup_key) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("dedup key must not be empty"),
					 errhint("Pass NULL for no dedup key.")));
		if (VARSIZE_ANY_EXHDR(o->dedup_key) > JOBQ_MAX_DEDUP_KEY)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("dedup key is too long"),
					 errdetail("Dedup keys are at most %d bytes long.",
							   JOBQ_MAX_DEDUP_KEY)));
	}

	/* jobs that must succeed first; NULL or empty for none */
	o->depends_on = NULL;
	o->wait_for_jobs = false;
	if (PG_NARGS() > opt + 6 && !PG_ARGISNULL(opt + 6))
	{
		int			ndeps;

		o->depends_on = PG_GETARG_ARRAYTYPE_P(opt + 6);
		o->wait_for_jobs = JobqCheckDependencies(o->depends_on, &ndeps);
		if (ndeps == 0)
			o->depends_on = NULL;
	}
}

/* the new row of jobq.job: the options, the job itself, its owner */
static void
job_row(const EnqueueOptions *o, Oid owner, text *command, text *task,
		Jsonb *payload, bool external, Datum *values, bool *nulls)
{
	memset(nulls, false, sizeof(bool) * NUM_JOB_COLUMNS);
	values[COL_QUEUE] = PointerGetDatum(o->queue);
	values[COL_PRIORITY] = Int16GetDatum((int16) o->priority);
	values[COL_RUN_AT] = TimestampTzGetDatum(o->run_at);
	values[COL_MAX_ATTEMPTS] = Int32GetDatum(o->max_attempts);
	values[COL_TIMEOUT] = o->timeout;
	nulls[COL_TIMEOUT] = o->timeout_null;
	values[COL_OWNER] = ObjectIdGetDatum(owner);
	values[COL_COMMAND] = PointerGetDatum(command);
	nulls[COL_COMMAND] = (command == NULL);
	values[COL_TASK] = PointerGetDatum(task);
	nulls[COL_TASK] = (task == NULL);
	values[COL_PAYLOAD] = PointerGetDatum(payload);
	nulls[COL_PAYLOAD] = (payload == NULL);
	values[COL_DEDUP_KEY] = PointerGetDatum(o->dedup_key);
	nulls[COL_DEDUP_KEY] = (o->dedup_key == NULL);
	values[COL_DEPENDS_ON] = PointerGetDatum(o->depends_on);
	nulls[COL_DEPENDS_ON] = (o->depends_on == NULL);
	values[COL_EXTERNAL] = BoolGetDatum(external);
	nulls[COL_EXTERNAL] = !JobqSchemaGet()->executors;
	/* a job that waits for others is out of the claims' reach until then */
	values[COL_NOT_BEFORE] = TimestampTzGetDatum(o->run_at);
	nulls[COL_NOT_BEFORE] = !o->wait_for_jobs;
	if (o->wait_for_jobs)
		values[COL_RUN_AT] = TimestampTzGetDatum(DT_NOEND);
}

/*
 * Queue a job: SQL (command) or a call of a registered task (task and
 * payload).  The options (queue, priority, run_at, max_attempts, timeout,
 * dedup_key, depends_on) are the arguments of fcinfo from number opt on.
 * Returns the job's id.  Every argument is checked before anything is
 * written.
 */
static int64
enqueue_job(FunctionCallInfo fcinfo, int opt, text *command, text *task,
			Jsonb *payload, bool external)
{
	EnqueueOptions o;
	Oid			owner = GetUserId();
	Datum		values[NUM_JOB_COLUMNS];
	bool		nulls[NUM_JOB_COLUMNS];
	bool		added = true;
	int64		id;

	enqueue_queue_priority(fcinfo, opt, &o);
	enqueue_timing(fcinfo, opt, &o);
	enqueue_dedup_depends(fcinfo, opt, &o);
	JobqCheckOwner(owner, true, NULL);

	job_row(&o, owner, command, task, payload, external, values, nulls);
	if (o.wait_for_jobs)
		JobqNoteDependents(true);
	/* a job of a role with a max_pending limit counts against it */
	values[COL_COUNTED] = BoolGetDatum(true);
	nulls[COL_COUNTED] = !JobqRoleCheckEnqueue(owner);
	if (o.dedup_key != NULL)
		id = insert_dedup_job(values, nulls, &added);
	else
		id = insert_job(values, nulls);
	if (added)
		JobqRoleEnqueued(owner);

	if (added && !o.wait_for_jobs)
		JobqNoteEnqueue(o.run_at, (int16) o.priority, id, external);
	return id;
}

static void
enqueue_checks(const char *what)
{
	JobqCheckPreloaded();
	check_jobq_database();
	PreventCommandIfReadOnly(what);
	PreventCommandIfParallelMode(what);
}

/*
 * jobq.enqueue(command, queue, priority, run_at, max_attempts, timeout)
 *		returns the new job's id.
 */
Datum
jobq_enqueue(PG_FUNCTION_ARGS)
{
	text	   *command;

	enqueue_checks("jobq.enqueue()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job command must not be null")));
	JobqCheckSize(PG_GETARG_DATUM(0), "job command", jobq_max_command_size,
			   "jobq.max_command_size");
	command = PG_GETARG_TEXT_PP(0);
	if (is_blank(VARDATA_ANY(command), VARSIZE_ANY_EXHDR(command)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("job command must not be empty")));

	PG_RETURN_INT64(enqueue_job(fcinfo, 1, command, NULL, NULL, false));
}

/*
 * jobq.enqueue_task(task, payload, queue, priority, run_at, max_attempts,
 *					 timeout) returns the new job's id.  The task must be
 * registered and the caller allowed to execute its function; the function
 * itself is looked up again when the job runs (task.c).
 */
Datum
jobq_enqueue_task(PG_FUNCTION_ARGS)
{
	text	   *task;
	Jsonb	   *payload;
	bool		external;

	enqueue_checks("jobq.enqueue_task()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task name must not be null")));
	task = PG_GETARG_TEXT_PP(0);
	(void) JobqTaskForEnqueue(text_to_cstring(task), &external);

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null"),
				 errhint("Omit the payload argument to pass an empty object.")));
	JobqCheckSize(PG_GETARG_DATUM(1), "payload", jobq_max_payload_size,
			   "jobq.max_payload_size");
	payload = PG_GETARG_JSONB_P(1);

	PG_RETURN_INT64(enqueue_job(fcinfo, 2, NULL, task, payload, external));
}

/*
 * jobq.running_jobs(): the jobs the workers are running right now, from
 * their shared slots: id, worker pid, attempt number, start of the
 * attempt.  A claim is a row lock (claim.c), so the tables do not know
 * which jobs run; jobq.jobs and jobq.status() join this.  Like the tables'
 * row-level security, it shows a role its own jobs, and all jobs to
 * superusers and members of pg_monitor.
 */
Datum
jobq_running_jobs(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JobqWorkerSlot slots[JOBQ_MAX_WORKERS];
	bool		see_all;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (!JobqSlotsSnapshot(slots))
		PG_RETURN_VOID();
	see_all = superuser() || has_privs_of_role(GetUserId(), ROLE_PG_MONITOR);

	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		if (slots[i].pid == 0 || slots[i].job_id == 0)
			continue;
		if (!see_all && slots[i].job_owner != GetUserId())
			continue;
		values[0] = Int64GetDatum(slots[i].job_id);
		values[1] = Int32GetDatum((int32) slots[i].pid);
		values[2] = Int32GetDatum(slots[i].job_attempt);
		values[3] = TimestampTzGetDatum(slots[i].job_started_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/*
 * jobq.current_job(): inside a job, its id; null elsewhere.
 */
Datum
jobq_current_job(PG_FUNCTION_ARGS)
{
	if (jobq_current_job_id == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(jobq_current_job_id);
}

/*
 * jobq.worker_info(): one row per worker slot, for jobq.workers.  Slots
 * up to jobq.workers are shown, and any slot beyond that still held by a
 * worker (the pool is shrinking).  Which job a worker runs, and its
 * queue, are shown as jobq.running_jobs() shows jobs: to its owner, to
 * superusers and to members of pg_monitor.
 */
Datum
jobq_worker_info(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JobqWorkerSlot *slots;
	bool		see_all;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	slots = palloc(sizeof(JobqWorkerSlot) * JOBQ_MAX_WORKERS);
	if (!JobqSlotsSnapshot(slots))
		PG_RETURN_VOID();
	see_all = superuser() || has_privs_of_role(GetUserId(), ROLE_PG_MONITOR);

	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		JobqWorkerSlot *w = &slots[i];
		Datum		values[10];
		bool		nulls[10];
		bool		running;

		if (i >= jobq_workers && w->pid == 0)
			continue;
		memset(nulls, true, sizeof(nulls));
		running = w->pid != 0 && w->job_id != 0;

		values[0] = Int32GetDatum(i + 1);
		nulls[0] = false;
		if (w->pid != 0)
		{
			values[1] = Int32GetDatum((int32) w->pid);
			nulls[1] = false;
		}
		values[2] = CStringGetTextDatum(w->pid == 0 ? "starting" :
										w->stop_requested ? "stopping" :
										running ? "busy" : "idle");
		nulls[2] = false;
		if (running && (see_all || w->job_owner == GetUserId()))
		{
			values[3] = Int64GetDatum(w->job_id);
			nulls[3] = false;
			values[4] = CStringGetTextDatum(w->job_queue);
			nulls[4] = false;
			values[5] = TimestampTzGetDatum(w->job_started_at);
			nulls[5] = false;
		}
		if (w->pid != 0)
		{
			values[6] = Int64GetDatum((int64) w->n_succeeded);
			values[7] = Int64GetDatum((int64) w->n_retried);
			values[8] = Int64GetDatum((int64) w->n_failed);
			values[9] = TimestampTzGetDatum(w->started_at);
			nulls[6] = nulls[7] = nulls[8] = nulls[9] = false;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
