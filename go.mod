module github.com/gowatchtower/watchtower

go 1.26
