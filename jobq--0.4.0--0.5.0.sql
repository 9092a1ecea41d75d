/* jobq--0.4.0--0.5.0.sql: dump and restore keep everything */

\echo Use "ALTER EXTENSION jobq UPDATE TO '0.5.0'" to load this file. \quit

/*
 * The install script no longer writes a row for queue "default": pg_dump
 * dumps jobq.queues whole, and the row the install script had written
 * again in the restored database made the restore of that table fail, so
 * every configured queue's settings were lost.  A "default" row that holds
 * no setting is removed; one that was configured stays, as any other.
 */
DELETE FROM jobq.queues
 WHERE queue OPERATOR(pg_catalog.=) 'default'
   AND concurrency IS NULL AND NOT paused;
