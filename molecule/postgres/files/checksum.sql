-- One line: the row count and an md5 over every column of every row, in id order.
SELECT count(*) || ' ' || md5(string_agg(
           concat_ws('|', id, name, encode(payload, 'hex'), doc::text, created AT TIME ZONE 'UTC'),
           E'\n' ORDER BY id))
FROM items;
