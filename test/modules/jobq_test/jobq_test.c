/*-------------------------------------------------------------------------
 *
 * jobq_test.c
 *		C tasks for jobq's test suites: what a task module written in C
 *		looks like.  A task is a function (jsonb) -> jsonb; it runs inside
 *		its job's transaction, so what it writes through SPI commits
 *		exactly when the job's success does, and an error rolls it back.
 *		Also claim_as_worker(), which lets an isolation spec drive jobq's
 *		own claim from a session, and expire_leases(), its expiry of the
 *		leases of external executors.
 *
 * IDENTIFICATION
 *		test/modules/jobq_test/jobq_test.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "jobq.h"
#include "floors.h"
#include "lease.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(jobq_test_spi_insert);
PG_FUNCTION_INFO_V1(jobq_test_fail_until);
PG_FUNCTION_INFO_V1(jobq_test_claim_as_worker);
PG_FUNCTION_INFO_V1(jobq_test_floors_reset);
PG_FUNCTION_INFO_V1(jobq_test_expire_leases);
PG_FUNCTION_INFO_V1(jobq_test_executor_floors);

/* the text of key in a JSON object, or an error */
static char *
payload_text(Jsonb *payload, const char *key, bool required)
{
	JsonbValue	k;
	JsonbValue *v;

	if (!JB_ROOT_IS_OBJECT(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload must be a JSON object")));
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&payload->root, JB_FOBJECT, &k);
	if (v == NULL)
	{
		if (!required)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload has no key \"%s\"", key)));
	}
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out,
												   NumericGetDatum(v->val.numeric)));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("payload key \"%s\" must be a string or a number", key)));
	return NULL;				/* keep compiler quiet */
}

static Jsonb *
one_key_object(const char *key, int64 value)
{
	char	   *json = psprintf("{\"%s\": " INT64_FORMAT "}", key, value);

	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

Datum
jobq_test_spi_insert(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload = PG_GETARG_JSONB_P(0);
	char	   *table = payload_text(payload, "table", true);
	char	   *value = payload_text(payload, "value", true);
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	uint64		n;

	values[0] = CStringGetTextDatum(value);
	SPI_connect();
	if (SPI_execute_with_args(psprintf("INSERT INTO %s VALUES ($1)",
									   quote_identifier(table)),
							  1, argtypes, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "insert into \"%s\" failed", table);
	n = SPI_processed;
	SPI_finish();
	PG_RETURN_JSONB_P(one_key_object("inserted", (int64) n));
}

Datum
jobq_test_fail_until(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload = PG_GETARG_JSONB_P(0);
	char	   *table = payload_text(payload, "table", true);
	int			succeed_at = pg_strtoint32(payload_text(payload, "succeed_at", true));
	int			attempt;
	bool		isnull;

	SPI_connect();
	if (SPI_execute("SELECT attempts FROM jobq.jobs WHERE id = jobq.current_job()",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "not running in a jobq job");
	attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull));
	if (SPI_execute(psprintf("INSERT INTO %s VALUES (%d)",
							 quote_identifier(table), attempt),
					false, 0) != SPI_OK_INSERT)
		elog(ERROR, "insert into \"%s\" failed", table);
	SPI_finish();

	if (attempt < succeed_at)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("attempt %d of %d failed on purpose", attempt, succeed_at)));
	PG_RETURN_JSONB_P(one_key_object("attempt", attempt));
}

/*
 * claim_as_worker(n, slot): claim up to n due jobs with the claim a jobq
 * worker makes (jobq's JobqClaimInTransaction, resolved in the preloaded
 * jobq library), as if in worker slot slot, and return their ids.  The
 * jobs stay locked by the caller's transaction until it ends.  Two
 * sessions must use two slots that no worker uses (the slot holds the
 * claim's state for the claim floors).
 */
Datum
jobq_test_claim_as_worker(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int32		n = PG_GETARG_INT32(0);
	int32		slot = PG_GETARG_INT32(1);
	JobqJob    *jobs;
	int			njobs;
	int			i;

	if (n < 1 || n > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("n must be between 1 and 1000")));
	if (slot < 0 || slot >= JOBQ_MAX_WORKERS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("slot must be between 0 and %d", JOBQ_MAX_WORKERS - 1)));
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (!JobqLockTables())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"jobq\" is not installed")));
	njobs = JobqClaimInTransaction(slot, n, CurrentMemoryContext, &jobs, NULL);
	for (i = 0; i < njobs; i++)
	{
		Datum		value = Int64GetDatum(jobs[i].id);
		bool		isnull = false;

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &value, &isnull);
	}
	PG_RETURN_VOID();
}

/*
 * floors_reset(): what a worker's commit does for the jobs it claimed and
 * let go, in its conservative form: a claim raised its level's floor past
 * them, and claims must find them again (jobq's JobqFloorsReset).
 */
Datum
jobq_test_floors_reset(PG_FUNCTION_ARGS)
{
	JobqFloorsReset(JOBQ_FLOORS_WORKERS);
	PG_RETURN_VOID();
}

/*
 * expire_leases(): put back the jobs of the leases that ended, as the
 * workers do, in the caller's transaction; returns how many.
 */
Datum
jobq_test_expire_leases(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(JobqExpireLeasesNow());
}

/*
 * executor_floors(): whether the external executors' claim floors are
 * valid, and each level's floor.
 */
Datum
jobq_test_executor_floors(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int16		levels[JOBQ_FLOOR_LEVELS];
	JobqFloor	keys[JOBQ_FLOOR_LEVELS];
	int			n;
	bool		valid;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	valid = JobqFloorsGet(JOBQ_FLOORS_EXECUTORS, levels, keys, &n);
	for (i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = BoolGetDatum(valid);
		values[1] = Int16GetDatum(keys[i].priority);
		values[2] = TimestampTzGetDatum(keys[i].run_at);
		values[3] = Int64GetDatum(keys[i].id);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
