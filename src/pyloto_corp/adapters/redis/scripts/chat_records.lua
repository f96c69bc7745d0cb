-- chat_records: a conversation's last records, newest first.
-- KEYS
--   1   its index of records (ids by creation)
-- ARGV
--   1   record key prefix
--   2   records wanted
-- Returns {JSON, conversation (field 'c'), per record}, newest first; the ids of records
-- whose hash is gone (expired) leave the index.
-- @include chat_list
return chat_list(KEYS[1], ARGV[1], tonumber(ARGV[2]))
