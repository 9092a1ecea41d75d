/*-------------------------------------------------------------------------
 *
 * queue.c
 *		Queues: their rows in jobq.queues, their settings, and what the
 *		workers make of them.
 *
 * A queue has a row in jobq.queues once it is configured; a queue that
 * only has jobs exists for jobq.queue_stats, which lists the queues of
 * the jobs the caller may see.  An enqueue writes nothing here, so it
 * takes no lock that another role's enqueue into a new queue could wait
 * for, and no role learns the queue names of another.
 *
 * Settings (a concurrency limit, paused) are changed by
 * jobq.configure_queue(), jobq.pause() and jobq.resume(), which send a
 * relcache invalidation of jobq.queues with their commit; every worker
 * keeps the queues that have a setting (the rules) and reads them again
 * after such an invalidation, at its next execution transaction.  See
 * claim.c for how a claim honours them, worker.c for the limit.
 *
 * IDENTIFICATION
 *		src/queue.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "jobq.h"
#include "wakeup.h"

PG_FUNCTION_INFO_V1(jobq_configure_queue);
PG_FUNCTION_INFO_V1(jobq_pause);
PG_FUNCTION_INFO_V1(jobq_resume);

/* the worker's rules: queues with a setting */
static JobqTableCopy rules_copy = {.relname = "queues"};

/* a row of jobq.queues */
static void
fill_rule(void *elem, HeapTuple tup, TupleDesc desc)
{
	JobqQueueRule *rule = (JobqQueueRule *) elem;
	bool		isnull;

	strlcpy(rule->queue, TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull)),
			NAMEDATALEN);
	rule->concurrency = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	rule->paused = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
}

/*
 * The worker's rules: the queues that are paused or have a concurrency
 * limit, read again after a change.  Needs a transaction and an active
 * snapshot.  *n is 0 with no rule (and with the tables of 0.2.0).
 */
JobqQueueRule *
JobqQueueRules(int *n)
{
	return JobqTableCopyLoad(&rules_copy,
							 "SELECT queue, COALESCE(concurrency, 0), paused"
							 "  FROM jobq.queues WHERE paused OR concurrency IS NOT NULL"
							 " ORDER BY queue LIMIT 1000",
							 sizeof(JobqQueueRule), fill_rule, n);
}

/* the concurrency limit of a queue, 0 for none */
int
JobqQueueLimit(const char *queue)
{
	JobqQueueRule *rules = rules_copy.rows;
	int			i;

	/* the worker's copy, read by its claim in the same transaction */
	for (i = 0; i < rules_copy.nrows; i++)
		if (rules[i].concurrency > 0 && strcmp(rules[i].queue, queue) == 0)
			return rules[i].concurrency;
	return 0;
}

/*
 * Set a queue's settings (NULL: leave as is) and return its row; the
 * workers take the change from the commit on.
 */
static Datum
set_queue(FunctionCallInfo fcinfo, const char *what, text *queue,
		  Datum concurrency, bool concurrency_set, Datum paused, bool paused_set)
{
	Oid			argtypes[5] = {TEXTOID, INT4OID, BOOLOID, BOOLOID, BOOLOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Datum		row;
	bool		isnull;
	char	   *name;
	Oid			queues_relid;

	JobqCheckPreloaded();
	PreventCommandIfReadOnly(what);
	if (queue == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue name must not be null")));
	name = text_to_cstring(queue);
	if (name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("queue name must not be empty")));
	if (strlen(name) > JOBQ_MAX_QUEUE_NAME)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("queue name \"%s\" is too long", name),
				 errdetail("Queue names are at most %d bytes long.",
						   JOBQ_MAX_QUEUE_NAME)));
	if (concurrency_set &&
		(DatumGetInt32(concurrency) < 0 ||
		 DatumGetInt32(concurrency) > JOBQ_MAX_WORKERS))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("concurrency must be between 1 and %d, or 0 for no limit, not %d",
						JOBQ_MAX_WORKERS, DatumGetInt32(concurrency))));

	queues_relid = JobqSchemaRelid("queues");
	if (!OidIsValid(queues_relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"jobq.queues\" does not exist"),
				 errhint("Update the extension with ALTER EXTENSION jobq UPDATE.")));

	values[0] = PointerGetDatum(queue);
	values[1] = concurrency;
	nulls[1] = concurrency_set && DatumGetInt32(concurrency) > 0 ? ' ' : 'n';
	values[2] = BoolGetDatum(concurrency_set);
	values[3] = paused;
	nulls[3] = paused_set ? ' ' : 'n';
	values[4] = BoolGetDatum(paused_set);
	if (JobqExecuteAsOwnerNulls(
								"INSERT INTO jobq.queues AS q (queue, concurrency, paused)"
								" VALUES ($1, $2, COALESCE($4, false))"
								" ON CONFLICT (queue) DO UPDATE"
								"   SET concurrency = CASE WHEN $3 THEN $2 ELSE q.concurrency END,"
								"       paused = CASE WHEN $5 THEN $4 ELSE q.paused END,"
								"       updated_at = pg_catalog.now()"
								" RETURNING q",
								5, argtypes, values, nulls, false) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not configure jobq queue \"%s\"", name);
	row = SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull),
							false, -1);
	SPI_finish();

	/* workers read the settings again; resumed jobs need a worker awake */
	CacheInvalidateRelcacheByRelid(queues_relid);
	JobqWakeAllAtCommit();
	return row;
}

/*
 * jobq.configure_queue(queue, concurrency, paused) returns jobq.queues
 */
Datum
jobq_configure_queue(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(set_queue(fcinfo, "jobq.configure_queue()",
							  PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
							  PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1),
							  !PG_ARGISNULL(1),
							  PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
							  !PG_ARGISNULL(2)));
}

Datum
jobq_pause(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(set_queue(fcinfo, "jobq.pause()",
							  PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
							  (Datum) 0, false, BoolGetDatum(true), true));
}

Datum
jobq_resume(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(set_queue(fcinfo, "jobq.resume()",
							  PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
							  (Datum) 0, false, BoolGetDatum(false), true));
}
